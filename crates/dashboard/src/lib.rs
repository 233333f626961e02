//! vitalmesh's live terminal dashboard: watch the mesh, inject failures
//! from the keyboard.
//!
//! Promises:
//! - **State apart from drawing.** The runtime sends snapshots on a bounded
//!   channel; [`app`] folds the newest into [`state::DashboardState`] once
//!   per frame; [`view`] only reads that state, so every panel renders the
//!   same from a fixed state (tested with ratatui's `TestBackend`).
//! - **Keys go through the front door.** A fault key becomes the TOML of an
//!   `[[event]]` entry, is validated like `vitalmesh inject`, and is applied
//!   by the mesh with source `dashboard`, so the timeline records it.
//! - **The terminal is always given back** — on quit, on error, on a panic
//!   on any thread ([`terminal`]). `NO_COLOR` is honoured; resizing redraws;
//!   at most [`app::MAX_FPS`] frames a second.
//!
//! The dashboard never blocks the mesh: it reads with `try_recv`, and a key
//! that finds the command queue full is refused with a message, not queued.

pub mod app;
pub mod keys;
pub mod state;
pub mod terminal;
pub mod view;

#[cfg(test)]
mod tests;

pub use app::{DashboardLink, Exit, run};
pub use state::Finished;

/// What can go wrong with the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The terminal could not be set up, read or drawn to.
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
}
