//! The store's own copy of the cluster's slot map: which master serves each slot.
//!
//! redis-rs keeps a slot map too, but does not share it, and the store needs one to group a
//! batch's keys by master before sending anything. A stale copy costs speed, not answers: a
//! master that no longer serves a key replies `MOVED` or `ASK`, and the store then sends that
//! key again by itself, through redis-rs's own redirect handling. Any redirect or failed
//! master makes the store fetch the map again (`CLUSTER SLOTS`), in the background and at
//! most every [`MIN_REFRESH_INTERVAL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::slot::SLOTS;

/// The least time between two fetches of the slot map: a burst of redirects during a reshard
/// costs one `CLUSTER SLOTS`, not one per call.
pub(super) const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Marks a slot that no master serves (a cluster being set up, or one that lost a master
/// with no replica). Its keys are sent by slot, and the cluster's error reply is the answer.
pub(super) const UNSERVED: u16 = u16::MAX;

/// Which master serves each slot, as of the last fetch.
#[derive(Debug)]
pub(super) struct Topology {
    /// For each slot, the index of its master in `masters`, or [`UNSERVED`].
    owner: Box<[u16]>,
    /// Masters by their node id (or `host:port` when the reply lacks one).
    masters: Vec<String>,
}

impl Topology {
    /// The master serving `slot`, or [`UNSERVED`].
    pub(super) fn owner(&self, slot: u16) -> u16 {
        self.owner
            .get(usize::from(slot))
            .copied()
            .unwrap_or(UNSERVED)
    }

    /// No slot served: the map of a cluster not reached yet.
    pub(super) fn empty() -> Topology {
        Topology {
            owner: vec![UNSERVED; SLOTS].into_boxed_slice(),
            masters: Vec::new(),
        }
    }

    /// How many masters serve slots.
    pub(super) fn masters(&self) -> usize {
        self.masters.len()
    }

    /// The name (node id) of the master serving `slot`.
    pub(super) fn master_of(&self, slot: u16) -> Option<&str> {
        self.masters
            .get(usize::from(self.owner(slot)))
            .map(String::as_str)
    }

    /// One slot of each master, to route a command to it by, with the master's name.
    pub(super) fn one_slot_each(&self) -> Vec<(u16, &str)> {
        let mut first: Vec<Option<u16>> = vec![None; self.masters.len()];
        for (slot, &master) in self.owner.iter().enumerate() {
            if let (Some(seen @ None), Ok(slot)) =
                (first.get_mut(usize::from(master)), u16::try_from(slot))
            {
                *seen = Some(slot);
            }
        }
        first
            .into_iter()
            .zip(&self.masters)
            .filter_map(|(slot, name)| Some((slot?, name.as_str())))
            .collect()
    }

    /// Builds the map from a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ..],
    /// replicas..], ..]`.
    pub(super) fn from_cluster_slots(reply: &Value) -> Result<Topology, String> {
        let Value::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS answered {reply:?}"));
        };
        let mut owner = vec![UNSERVED; SLOTS].into_boxed_slice();
        let mut masters: Vec<String> = Vec::new();
        let mut by_name: HashMap<String, u16> = HashMap::new();
        for range in ranges {
            let (start, end, master) = parse_range(range)
                .ok_or_else(|| format!("CLUSTER SLOTS answered a malformed range {range:?}"))?;
            let index = *by_name.entry(master.clone()).or_insert_with(|| {
                masters.push(master);
                // At most one master per slot range, and there are 16,384 slots.
                u16::try_from(masters.len() - 1).unwrap_or(UNSERVED)
            });
            for slot in start..=end {
                owner[usize::from(slot)] = index;
            }
        }
        Ok(Topology { owner, masters })
    }
}

/// One range of a `CLUSTER SLOTS` reply: its first and last slot and its master's name.
fn parse_range(range: &Value) -> Option<(u16, u16, String)> {
    let Value::Array(fields) = range else {
        return None;
    };
    let slot = |value: &Value| match value {
        Value::Int(slot) => u16::try_from(*slot)
            .ok()
            .filter(|s| usize::from(*s) < SLOTS),
        _ => None,
    };
    let start = slot(fields.first()?)?;
    let end = slot(fields.get(1)?)?;
    let Value::Array(master) = fields.get(2)? else {
        return None;
    };
    let text = |value: Option<&Value>| match value {
        Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Some(text.clone()),
        Some(Value::Int(number)) => Some(number.to_string()),
        _ => None,
    };
    let name = text(master.get(2))
        .filter(|id| !id.is_empty())
        .or_else(|| {
            Some(format!(
                "{}:{}",
                text(master.first()).unwrap_or_default(),
                text(master.get(1))?
            ))
        })?;
    (start <= end).then_some((start, end, name))
}

/// The current slot map, and the single background refresh that replaces it.
#[derive(Debug)]
pub(super) struct TopologyCell {
    current: RwLock<Arc<Topology>>,
    refreshing: AtomicBool,
    last_refresh: Mutex<Instant>,
}

impl TopologyCell {
    pub(super) fn new(topology: Topology) -> TopologyCell {
        TopologyCell {
            current: RwLock::new(Arc::new(topology)),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(Instant::now()),
        }
    }

    /// Uses `topology` from now on.
    pub(super) fn replace(&self, topology: Topology) {
        *self.current.write() = Arc::new(topology);
    }

    /// The slot map as of the last fetch.
    pub(super) fn current(&self) -> Arc<Topology> {
        Arc::clone(&self.current.read())
    }

    /// Fetches the slot map once, from any node.
    pub(super) async fn fetch(connection: &mut ClusterConnection) -> RedisResult<Topology> {
        let reply = connection
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Topology::from_cluster_slots(&reply).map_err(|message| {
            RedisError::from((redis::ErrorKind::Parse, "CLUSTER SLOTS", message))
        })
    }

    /// Fetches the slot map again in the background, unless a fetch is running or one ran
    /// less than [`MIN_REFRESH_INTERVAL`] ago. A failed fetch keeps the old map; the next
    /// redirect or failure tries again.
    pub(super) fn refresh_soon(
        self: &Arc<Self>,
        connection: &ClusterConnection,
        timeout: Duration,
    ) {
        if self.last_refresh.lock().elapsed() < MIN_REFRESH_INTERVAL
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let cell = Arc::clone(self);
        let mut connection = connection.clone();
        tokio::spawn(async move {
            let fetch = Self::fetch(&mut connection);
            if let Ok(Ok(topology)) = tokio::time::timeout(timeout, fetch).await {
                cell.replace(topology);
            }
            *cell.last_refresh.lock() = Instant::now();
            cell.refreshing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::Int(port),
            Value::BulkString(id.as_bytes().to_vec()),
        ])
    }

    fn range(start: i64, end: i64, master: Value) -> Value {
        Value::Array(vec![Value::Int(start), Value::Int(end), master])
    }

    #[test]
    fn maps_every_slot_to_its_master() {
        let reply = Value::Array(vec![
            range(0, 99, node(7000, "a")),
            range(100, 16_283, node(7001, "b")),
            range(16_284, 16_383, node(7000, "a")),
        ]);
        let topology = Topology::from_cluster_slots(&reply).expect("a well-formed reply");
        assert_eq!(topology.masters(), 2);
        assert_eq!(topology.owner(0), 0);
        assert_eq!(topology.owner(100), 1);
        assert_eq!(topology.owner(16_383), 0);
        assert_eq!(topology.master_of(150), Some("b"));
        assert_eq!(topology.one_slot_each(), [(0, "a"), (100, "b")]);
    }

    #[test]
    fn unserved_slots_and_malformed_replies() {
        let reply = Value::Array(vec![range(0, 10, node(7000, ""))]);
        let topology = Topology::from_cluster_slots(&reply).unwrap();
        assert_eq!(topology.owner(11), UNSERVED);
        assert_eq!(topology.master_of(11), None);
        assert_eq!(topology.masters[0], "127.0.0.1:7000");
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![range(5, 4, node(1, "x"))]),
            Value::Array(vec![range(0, 16_384, node(1, "x"))]),
        ] {
            assert!(Topology::from_cluster_slots(&bad).is_err());
        }
    }
}
