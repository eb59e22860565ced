//! The sans-IO engine (issue 3).
