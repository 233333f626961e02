//! Keys. Each key is a [`UiCommand`]; the fault keys become the same TOML an
//! `[[event]]` entry or `vitalmesh inject` would hold, and are validated and
//! applied through the same path, so the timeline records them (source
//! `dashboard`).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::state::{DashboardState, LatencyWindow};

/// What a key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiCommand {
    /// Stop the run (the report is still written).
    Quit,
    /// Show or hide the key help.
    ToggleHelp,
    /// Pause or resume rendering.
    TogglePause,
    /// Switch the latency window (last 10 s / whole run).
    ToggleLatencyWindow,
    /// Show the ground truth of sensor faults on the map, or not.
    ToggleTruth,
    /// List raw alerts instead of incidents, or back.
    ToggleAlerts,
    /// Select the next ward.
    NextWard,
    /// Select the previous ward.
    PrevWard,
    /// Select the next aggregator.
    NextAggregator,
    /// Select the previous aggregator.
    PrevAggregator,
    /// Apply an action to the mesh.
    Inject {
        /// The action as TOML lines (same fields as an `[[event]]`).
        toml: String,
    },
}

/// One line of the key help.
pub const HELP: &[(&str, &str)] = &[
    ("k", "kill a random node"),
    ("K", "kill every node of the selected ward"),
    ("r", "restart the selected ward's crashed nodes"),
    ("a / A", "kill / restart the selected aggregator"),
    ("g / G", "kill one / restart the ward's gateways"),
    ("+ / -", "add an aggregator / remove the selected one"),
    ("b", "restart the broker"),
    ("p", "partition the selected ward for 30 s"),
    ("o", "start a fever outbreak in the selected ward"),
    ("← →", "select a ward"),
    ("↑ ↓", "select an aggregator"),
    ("l", "latency: last 10 s / whole run"),
    ("i", "incidents / raw alerts"),
    ("t", "map: ground-truth sensor faults"),
    ("space", "pause / resume rendering"),
    ("?", "show / hide this help"),
    ("q, Ctrl-C", "stop the run (the report is still written)"),
];

/// The command a key press means in `state`, if any.
pub fn command_for(key: KeyEvent, state: &DashboardState) -> Option<UiCommand> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ward = state.selected_ward;
    let agg = state.selected_aggregator;
    let inject = |toml: String| Some(UiCommand::Inject { toml });
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
            Some(UiCommand::Quit)
        }
        KeyCode::Char('q') => Some(UiCommand::Quit),
        KeyCode::Esc if state.help => Some(UiCommand::ToggleHelp),
        KeyCode::Char('?') => Some(UiCommand::ToggleHelp),
        KeyCode::Char(' ') => Some(UiCommand::TogglePause),
        KeyCode::Char('l') => Some(UiCommand::ToggleLatencyWindow),
        KeyCode::Char('t') => Some(UiCommand::ToggleTruth),
        KeyCode::Char('i') => Some(UiCommand::ToggleAlerts),
        KeyCode::Right => Some(UiCommand::NextWard),
        KeyCode::Left => Some(UiCommand::PrevWard),
        KeyCode::Down => Some(UiCommand::NextAggregator),
        KeyCode::Up => Some(UiCommand::PrevAggregator),
        KeyCode::Char('k') => inject("action = \"kill_nodes\"\ncount = 1\n".into()),
        KeyCode::Char('K') => inject(format!("action = \"kill_nodes\"\nward = {ward}\n")),
        KeyCode::Char('r') => inject(format!("action = \"restart_nodes\"\nward = {ward}\n")),
        KeyCode::Char('a') => inject(format!(
            "action = \"kill_aggregator\"\naggregator = {agg}\n"
        )),
        KeyCode::Char('A') => inject(format!(
            "action = \"restart_aggregator\"\naggregator = {agg}\n"
        )),
        KeyCode::Char('g') => inject(format!(
            "action = \"kill_gateways\"\nward = {ward}\ncount = 1\n"
        )),
        KeyCode::Char('G') => inject(format!("action = \"restart_gateways\"\nward = {ward}\n")),
        KeyCode::Char('+') => inject("action = \"add_aggregator\"\n".into()),
        KeyCode::Char('-') => inject(format!(
            "action = \"remove_aggregator\"\naggregator = {agg}\n"
        )),
        KeyCode::Char('b') => inject("action = \"restart_broker\"\n".into()),
        KeyCode::Char('p') => inject(format!(
            "action = \"partition\"\nward = {ward}\nfor = \"30s\"\n"
        )),
        KeyCode::Char('o') => inject(format!(
            "action = \"outbreak\"\nward = {ward}\nattack_rate = 0.3\nonset_median = \"2m\"\nonset_spread = 0.5\n"
        )),
        _ => None,
    }
}

/// Applies the commands that only change the dashboard; returns the others.
pub fn apply_local(command: UiCommand, state: &mut DashboardState) -> Option<UiCommand> {
    match command {
        UiCommand::ToggleHelp => state.help = !state.help,
        UiCommand::TogglePause => state.paused = !state.paused,
        UiCommand::ToggleLatencyWindow => {
            state.latency_window = match state.latency_window {
                LatencyWindow::Recent => LatencyWindow::Whole,
                LatencyWindow::Whole => LatencyWindow::Recent,
            }
        }
        UiCommand::ToggleTruth => state.show_truth = !state.show_truth,
        UiCommand::ToggleAlerts => state.show_alerts = !state.show_alerts,
        UiCommand::NextWard => state.selected_ward = (state.selected_ward + 1) % state.wards(),
        UiCommand::PrevWard => {
            state.selected_ward = (state.selected_ward + state.wards() - 1) % state.wards()
        }
        UiCommand::NextAggregator => {
            state.selected_aggregator = (state.selected_aggregator + 1) % state.aggregators()
        }
        UiCommand::PrevAggregator => {
            state.selected_aggregator =
                (state.selected_aggregator + state.aggregators() - 1) % state.aggregators();
        }
        other => return Some(other),
    }
    None
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::KeyEvent;
    use vitalmesh_scenario::{Action, Limits, parse_injection};

    use super::*;

    fn key(c: char) -> KeyEvent {
        KeyEvent::from(KeyCode::Char(c))
    }

    #[test]
    fn fault_keys_build_actions_the_injection_validator_accepts() {
        let mut state = DashboardState::new(true);
        state.selected_ward = 2;
        state.selected_aggregator = 1;
        let limits = Limits {
            wards: 4,
            nodes_per_ward: 10,
            aggregators: 3,
            external_broker: false,
            gateways_per_ward: 2,
        };
        let mut names = Vec::new();
        for c in ['k', 'K', 'r', 'a', 'A', 'g', 'G', '+', '-', 'b', 'p', 'o'] {
            let Some(UiCommand::Inject { toml }) = command_for(key(c), &state) else {
                panic!("'{c}' is not a fault key")
            };
            let action = parse_injection(&toml, &limits).unwrap_or_else(|e| panic!("'{c}': {e}"));
            names.push(action.name());
            if c == 'p' {
                assert!(matches!(action, Action::Partition { .. }));
                assert!(action.to_string().contains("ward 2 for 30s"), "{action}");
            }
        }
        assert_eq!(
            names,
            [
                "kill_nodes",
                "kill_nodes",
                "restart_nodes",
                "kill_aggregator",
                "restart_aggregator",
                "kill_gateways",
                "restart_gateways",
                "add_aggregator",
                "remove_aggregator",
                "restart_broker",
                "partition",
                "outbreak"
            ]
        );
        // Without gateways the gateway keys are refused, saying why.
        let direct = Limits {
            gateways_per_ward: 0,
            ..limits
        };
        let Some(UiCommand::Inject { toml }) = command_for(key('g'), &state) else {
            panic!("'g' is not a fault key")
        };
        let err = parse_injection(&toml, &direct).unwrap_err().to_string();
        assert!(err.contains("needs gateways"), "{err}");
    }

    #[test]
    fn selection_keys_wrap_around() {
        let mut state = DashboardState::new(false);
        assert_eq!(apply_local(UiCommand::PrevWard, &mut state), None);
        assert_eq!(state.selected_ward, 0, "one ward before the first snapshot");
        assert_eq!(
            apply_local(UiCommand::ToggleLatencyWindow, &mut state),
            None
        );
        assert_eq!(state.latency_window, LatencyWindow::Whole);
        assert_eq!(
            apply_local(UiCommand::Quit, &mut state),
            Some(UiCommand::Quit)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(command_for(ctrl_c, &state), Some(UiCommand::Quit));
    }
}
