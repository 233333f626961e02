//! Tests that need the crate's insides: rendering from fixed states and
//! the dashboard loop's handling of keys, snapshots and answers.

mod app;
mod fixture;
mod render;
