//! Confirming a batch's "dead" answers: the epoch records of their slots, and the markers of
//! their masters, read after the keys.
//!
//! A record read after the keys shows any loss of its slot that happened before the keys were
//! read; the marker at the end of the same pipeline, that the master is the server the store
//! loaded it into, not one restarted from a snapshot or promoted behind. A "dead" answer whose
//! slot could not be confirmed this way (its record read had to follow a redirect, on its own,
//! without a marker check) fails the call instead of being given out: the caller falls back to
//! its database.

use redis::{Cmd, Value};

use super::Inner;
use super::dispatch::{redirected, unexpected};
use super::plan::{self, Part};
use crate::remote::Failure;

impl Inner {
    /// Reads the epoch records of `slots`, where a batch found keys missing, with their
    /// masters' markers. Whether every slot was confirmed.
    pub(super) async fn vouch(&self, slots: &[u16]) -> Result<bool, Failure> {
        let op = "is_alive_batch";
        let topology = self.topology.current();
        let groups = plan::record_reads(&topology, &self.losses, slots);
        let mut vouched = 0;
        let mut observe = |part: &Part, reply: &Value| match reply {
            Value::ServerError(error) if redirected(error.kind()) => Ok(false),
            Value::ServerError(_) => Err(unexpected(reply)),
            _ if part.check.is_some() => {
                vouched += usize::from(self.observe_record(part, reply).vouches);
                Ok(true)
            }
            _ => Err(unexpected(reply)),
        };
        let outcomes = self.send_groups(groups, &mut observe).await;
        let retry = self.settle(op, outcomes)?;
        if !retry.is_empty() {
            // Read again where the slots are now, to learn of any loss there; these vouch for
            // nothing (no marker check follows them).
            let reads: Vec<(Cmd, Part)> = retry
                .iter()
                .filter_map(|part| plan::record_read(&self.losses.records, part.slot))
                .collect();
            let (commands, parts): (Vec<Cmd>, Vec<Part>) = reads.into_iter().unzip();
            for (part, reply) in parts.iter().zip(self.resend(commands).await) {
                match reply {
                    Ok(value) => {
                        let _ = self.observe_record(part, &value);
                    }
                    Err(error) => return Err(self.failed(op, &error)),
                }
            }
        }
        Ok(vouched == slots.len())
    }
}
