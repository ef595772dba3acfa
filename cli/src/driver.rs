//! `--driver auto|io_uring|epoll`: which I/O driver the runtimes of a command
//! run (`ringrpc::Driver`; the `RINGRPC_DRIVER` environment variable, when
//! set, overrides it, as it does for any ringrpc program), and the one line
//! that says which driver ran and why.

use std::sync::atomic::{AtomicBool, Ordering};

use ringrpc::{Driver, DriverInfo};

/// Parses a `--driver` value.
pub fn parse_driver(text: &str) -> Result<Driver, String> {
    text.parse::<Driver>().map_err(|e| e.to_string())
}

/// The line that says which driver `info` describes, and why when `Auto`
/// fell back to epoll.
pub fn describe(info: &DriverInfo) -> String {
    match &info.fallback {
        Some(why) => format!("driver {} (io_uring unavailable: {why})", info.kind),
        None => format!("driver {}", info.kind),
    }
}

static SAID: AtomicBool = AtomicBool::new(false);

/// Prints [`describe`] on stderr the first time it is called in this process
/// (a bench starts fresh runtimes for every row; the driver is said once).
pub fn say_once(info: &DriverInfo) {
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!("ringrpc: {}", describe(info));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_values_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_driver("epoll"), Ok(Driver::Epoll));
        assert_eq!(parse_driver("io_uring"), Ok(Driver::IoUring));
        assert_eq!(parse_driver("auto"), Ok(Driver::Auto));
        assert!(parse_driver("kqueue").unwrap_err().contains("kqueue"));
    }
}
