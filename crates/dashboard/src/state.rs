//! What the dashboard knows: the latest snapshot of the run, folded in once
//! per frame, and the operator's own choices (selected ward and aggregator,
//! latency window, pause, help). Drawing only reads this.

use std::path::PathBuf;

use vitalmesh_scenario::slo::SloResult;
use vitalmesh_sim::Snapshot;
use vitalmesh_sim::ledger::LedgerRow;

/// Which latency distribution the latency panel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyWindow {
    /// The last ten seconds.
    Recent,
    /// The whole run.
    Whole,
}

/// How a status message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// Something happened as asked.
    Info,
    /// Something was refused.
    Error,
}

/// The dashboard's state.
#[derive(Debug, Clone)]
pub struct DashboardState {
    /// The latest snapshot, if any has arrived.
    pub snapshot: Option<Snapshot>,
    /// The ward keys act on.
    pub selected_ward: u16,
    /// The aggregator keys act on.
    pub selected_aggregator: u16,
    /// Latency panel window.
    pub latency_window: LatencyWindow,
    /// Rendering paused (data still flows in).
    pub paused: bool,
    /// Key help shown.
    pub help: bool,
    /// The map also shows the simulator's ground truth of sensor faults.
    pub show_truth: bool,
    /// The bottom-left panel lists raw alerts instead of incidents.
    pub show_alerts: bool,
    /// The last action's outcome.
    pub status: Option<(String, StatusKind)>,
    /// Whether to use colour (off when `NO_COLOR` is set).
    pub color: bool,
    /// The operator asked to stop; the run is finishing.
    pub stopping: bool,
    /// The run is over: its final ledger and where the report went.
    pub finished: Option<Finished>,
}

impl DashboardState {
    /// An empty state.
    pub fn new(color: bool) -> Self {
        Self {
            snapshot: None,
            selected_ward: 0,
            selected_aggregator: 0,
            latency_window: LatencyWindow::Recent,
            paused: false,
            help: false,
            show_truth: false,
            show_alerts: false,
            status: None,
            color,
            stopping: false,
            finished: None,
        }
    }

    /// Folds in a new snapshot (the latest wins) and keeps selections valid.
    pub fn apply(&mut self, snapshot: Snapshot) {
        let wards = snapshot.population.wards.max(1);
        let aggregators = (snapshot.aggregators.len() as u16).max(1);
        self.selected_ward = self.selected_ward.min(wards - 1);
        self.selected_aggregator = self.selected_aggregator.min(aggregators - 1);
        self.snapshot = Some(snapshot);
    }

    /// Number of wards (1 before the first snapshot).
    pub fn wards(&self) -> u16 {
        self.snapshot
            .as_ref()
            .map_or(1, |s| s.population.wards.max(1))
    }

    /// Number of aggregators (1 before the first snapshot).
    pub fn aggregators(&self) -> u16 {
        self.snapshot
            .as_ref()
            .map_or(1, |s| (s.aggregators.len() as u16).max(1))
    }

    /// Sets the status line.
    pub fn say(&mut self, text: impl Into<String>, kind: StatusKind) {
        self.status = Some((text.into(), kind));
    }
}

/// What the run says when it is over.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The final ledger of the whole run.
    pub ledger: LedgerRow,
    /// SLO verdicts.
    pub slo: Vec<SloResult>,
    /// Where the JSON report was written.
    pub report: PathBuf,
    /// Whether the run was stopped early.
    pub interrupted: bool,
}
