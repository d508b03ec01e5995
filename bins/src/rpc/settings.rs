//! Settings the servers and the client share: durations as operators write
//! them (`250ms`, `10s`, `2m`, `1h`, `7d`) on the command line and in TOML
//! files, and the wall clock.

use std::time::Duration;

use serde::Deserialize;

/// Parses `250ms`, `10s`, `2m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|character: char| !character.is_ascii_digit())
        .map_or((text, ""), |index| text.split_at(index));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 10s, 2m, 1h or 7d"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3_600)),
        "d" => Ok(Duration::from_secs(value * 86_400)),
        _ => Err(format!(
            "{text:?} is not a duration like 250ms, 10s, 2m, 1h or 7d"
        )),
    }
}

pub fn deserialize_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Milliseconds since the Unix epoch: the wall clock of servers and clients.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
