//! The first contact with the cluster: its slot map, the epoch records, the markers and the
//! masters' uptime (see `loss`), at build or, when no seed can be reached then, in the
//! background until one can (see `remote::contact`).

use std::time::Duration;

use redis::RedisError;

use super::Inner;
use super::topology::TopologyCell;
use crate::Error;
use crate::redact::scrub;
use crate::remote::contact::{Failure, hint, unreachable};

impl Inner {
    /// Connects to the cluster through its seeds, reads its slot map and takes the first look
    /// at its records and masters, each within `timeout`.
    pub(super) async fn contact(&self, timeout: Duration) -> Result<(), Failure> {
        let mut connection = self
            .connection
            .connect()
            .await
            .map_err(|error| self.classify(&error, timeout))?;
        let topology =
            match tokio::time::timeout(timeout, TopologyCell::fetch(&mut connection)).await {
                Ok(Ok(topology)) => topology,
                Ok(Err(error)) => return Err(self.classify(&error, timeout)),
                Err(_) => {
                    return Err(Failure::Unreachable(Error::backend(
                        "connect",
                        format!(
                            "{}: no slot map within connect_timeout ({timeout:?})",
                            self.name
                        ),
                    )));
                }
            };
        self.topology.replace(topology);
        self.connection.install(connection);
        // A cluster that answered but failed the first look (slots moving, a master failing
        // over) is worth another try, not a refusal.
        self.first_look(timeout).await.map_err(Failure::Unreachable)
    }

    /// What a failed connect means, in an error that names the redacted seeds and the setting
    /// to check.
    fn classify(&self, error: &RedisError, timeout: Duration) -> Failure {
        let detail = scrub(&error.to_string(), &self.seeds);
        let hint = hint(error, timeout);
        if unreachable(error) {
            Failure::Unreachable(Error::backend(
                "connect",
                format!(
                    "cannot reach the cluster at {}: {detail} ({hint})",
                    self.name
                ),
            ))
        } else {
            Failure::Refused(Error::backend(
                "connect",
                format!(
                    "the cluster at {} refused the connection: {detail} ({hint})",
                    self.name
                ),
            ))
        }
    }
}
