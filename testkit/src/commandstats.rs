//! `INFO commandstats`, read as what a Redis received: how many calls of each command.

/// Parses `cmdstat_<name>:calls=N,...` lines of `INFO commandstats`.
pub fn parse_command_stats(info: &str) -> Vec<(String, u64)> {
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

/// `"config|resetstat"` -> `"config"`.
pub fn base_command(name: &str) -> &str {
    name.split('|').next().unwrap_or(name)
}
