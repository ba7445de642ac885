//! `INFO commandstats`, read as what a Redis received: how many calls of each command.

use std::collections::BTreeMap;

/// Calls per command name: lower case, subcommands as `parent|sub`.
pub type Calls = BTreeMap<String, u64>;

/// Commands that are not the work of the code under test: the harness's own bookkeeping
/// (`INFO`, `CONFIG`, `PING`) and connection set-up (`CLIENT SETINFO`, `HELLO`, `SELECT`,
/// `AUTH`, which a `--requirepass` server's every connection sends).
pub const BOOKKEEPING_COMMANDS: [&str; 7] = [
    "info", "config", "ping", "client", "hello", "select", "auth",
];

/// Parses `cmdstat_<name>:calls=N,...` lines of `INFO commandstats`.
pub fn parse_command_stats(info: &str) -> Calls {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_ascii_lowercase(), calls))
        })
        .collect()
}

/// `INFO commandstats` of the server behind `connection`: every command's calls so far.
pub fn read_command_stats(connection: &mut redis::Connection) -> redis::RedisResult<Calls> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(connection)?;
    Ok(parse_command_stats(&info))
}

/// The calls made between two readings. A command missing from `before` had not been called;
/// a count that went down (someone ran `CONFIG RESETSTAT`) counts from zero.
pub fn calls_between(before: &Calls, after: &Calls) -> Calls {
    after
        .iter()
        .map(|(name, &calls)| {
            let was = before.get(name).copied().unwrap_or(0);
            (name.clone(), if calls >= was { calls - was } else { calls })
        })
        .filter(|&(_, made)| made > 0)
        .collect()
}

/// `"config|resetstat"` -> `"config"`.
pub fn base_command(name: &str) -> &str {
    name.split('|').next().unwrap_or(name)
}

/// Whether `name` (a command or `parent|sub`) is one of [`BOOKKEEPING_COMMANDS`].
pub fn is_bookkeeping(name: &str) -> bool {
    BOOKKEEPING_COMMANDS.contains(&base_command(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Commandstats\r\n\
        cmdstat_set:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# Commandstats\r\n\
        cmdstat_set:calls=1010,usec=5050,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_MGET:calls=4,usec=400,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setinfo:calls=4,usec=4,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        not a stat line\r\n\
        cmdstat_broken:usec=3\r\n";

    #[test]
    fn readings_parse_and_subtract() {
        let after = parse_command_stats(AFTER);
        assert_eq!(after.get("mget"), Some(&4), "names are lower-cased");
        assert_eq!(
            after.len(),
            4,
            "lines without calls= are skipped: {after:?}"
        );
        let made = calls_between(&parse_command_stats(BEFORE), &after);
        let names: Vec<&str> = made.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["client|setinfo", "mget", "set"],
            "config|get did not move"
        );
        assert_eq!(
            made["set"],
            after["set"] - parse_command_stats(BEFORE)["set"]
        );
        assert!(is_bookkeeping("client|setinfo") && !is_bookkeeping("mget"));
        // A reset in between counts from zero instead of going negative.
        let reset = calls_between(&after, &parse_command_stats(BEFORE));
        assert_eq!(reset["set"], parse_command_stats(BEFORE)["set"]);
    }
}
