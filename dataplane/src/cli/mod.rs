//! What the two binaries share as command-line programs: exit codes and
//! failures, standard output that survives a closed pipe, shell completions
//! and man pages (tables are `render::table`'s). Their subcommands stay in
//! the binaries.

pub mod exit;
pub mod generate;
pub mod out;
pub mod views;

pub use exit::{CommandError, Exit};
