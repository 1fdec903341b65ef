//! Lines for stdout (`out!`) and stderr (`note!`) that never panic. Rust's
//! `println!` panics when its reader went away (`myinvois-auth check … |
//! head -n 2`: the pipe is closed, the write fails with `EPIPE`), and the
//! command would then exit with a panic's 101 instead of its documented
//! code. A line nobody can read any more is dropped.

/// A line on stdout, dropped if stdout cannot be written.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A line on stderr, dropped if stderr cannot be written.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {note, out};
