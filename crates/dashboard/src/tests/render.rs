//! Rendering from fixed states with ratatui's `TestBackend`: every panel,
//! a small and a large terminal, with and without colour.

use std::path::PathBuf;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use vitalmesh_sim::ledger::LedgerRow;

use super::fixture::{snapshot, state};
use crate::Finished;
use crate::keys::HELP;
use crate::state::{DashboardState, LatencyWindow};
use crate::view::draw;

fn render(state: &DashboardState, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, state)).unwrap();
    terminal.backend().buffer().clone()
}

fn lines(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
        .collect()
}

fn screen(buf: &Buffer) -> String {
    lines(buf).join("\n")
}

fn assert_shows(screen: &str, needles: &[&str]) {
    for n in needles {
        assert!(screen.contains(n), "expected {n:?} on screen:\n{screen}");
    }
}

/// The map row of `ward` (its label starts the row segment).
fn map_row(buf: &Buffer, ward: u16) -> String {
    let label = format!("W{ward:<2}");
    lines(buf)
        .into_iter()
        .find_map(|l| l.find(&label).map(|i| l[i..].to_string()))
        .unwrap_or_else(|| panic!("no map row for {label}:\n{}", screen(buf)))
}

#[test]
fn every_panel_fits_an_80_by_24_terminal() {
    let buf = render(&state(snapshot(3, 20), true), 80, 24);
    let text = screen(&buf);
    assert_shows(
        &text,
        &[
            // header
            "fixture-ward",
            "1:05 / 10:00",
            "running",
            "57/60 connected",
            // throughput
            "Throughput/s",
            "pub 61",
            "del 60",
            "ack 59",
            // latency
            "last 10 s",
            "p50 1.5",
            "p99 3.4",
            // map
            "Nodes by ward · 1 down · 1 suspected",
            // aggregators
            "Aggregators",
            "id up   prim stby in/s  down rst",
            "DOWN",
            // incidents, newest first
            "Incidents · 4 open of 4",
            "CRIT ward 0 node 7: patient worsening",
            "WARN ward 0 node 5: check the sensors",
            // events
            "Events · 2",
            // Incidents get the wider share; at 80 columns an event's
            // last letters are cut.
            "[dashboard] kill aggregat",
            // ledger, abbreviated to fit
            "prod 12,345",
            "deliv 12,300",
            "lost 4",
            "unexpl at end",
            // footer
            "? help",
        ],
    );
    // Ward 1 holds nodes 20..40: node 25 down, 26 suspected, 27 crashed;
    // its CUSUM alarms.
    let w1 = map_row(&buf, 1);
    assert_eq!(&w1[4..24], ".....X?x............", "{text}");
    assert!(w1[24..].trim_start().starts_with("█!"), "ward gauge: {w1}");
    // Ward 0: node 5's sensor is held suspect by the detectors; node 3's
    // real fault is not shown (the map shows conclusions, not the truth).
    let w0 = map_row(&buf, 0);
    assert_eq!(&w0[4..24], ".....s..............", "{text}");
    assert!(w0[24..].trim_start().starts_with('▂'), "calm ward: {w0}");
    assert_eq!(buf.area.height, 24);
}

#[test]
fn the_truth_key_adds_the_faults_the_detectors_missed_and_i_shows_raw_alerts() {
    let mut st = state(snapshot(3, 20), true);
    st.show_truth = true;
    st.show_alerts = true;
    let buf = render(&st, 80, 24);
    let w0 = map_row(&buf, 0);
    assert_eq!(&w0[4..24], "...S.s..............", "{}", screen(&buf));
    let text = screen(&buf);
    assert_shows(
        &text,
        &[
            "Alerts · 4",
            "HIGH    NEWS2 8 patient at",
            "SENSOR  node 5 (ward 0)",
        ],
    );
    let alerts: Vec<String> = lines(&buf)
        .into_iter()
        .filter(|l| l.contains("NEWS2 8") || l.contains("node 25 ("))
        .collect();
    assert_eq!(alerts.len(), 2, "{text}");
    assert!(alerts[0].contains("NEWS2 8"), "newest alert first:\n{text}");
}

#[test]
fn a_virtual_run_says_so_with_its_speed() {
    let mut s = snapshot(3, 20);
    s.mode = vitalmesh_sim::RunMode::Virtual;
    s.speed = Some(60.0);
    s.broker_url = "virtual://broker".into();
    let text = screen(&render(&state(s, true), 200, 60));
    assert_shows(&text, &["virtual time ×60", "broker virtual://broker"]);
    assert!(!text.contains("real time"), "{text}");
}

#[test]
fn a_large_terminal_shows_the_seed_the_broker_and_the_whole_legend() {
    let buf = render(&state(snapshot(3, 20), true), 200, 60);
    let text = screen(&buf);
    assert_shows(
        &text,
        &[
            "seed 4242",
            "broker mqtt://127.0.0.1:41883",
            "real time",
            "ok",
            "suspect",
            "down",
            "buffer",
            "battery",
            "sensor",
            "crash",
            "offline",
            "broker embedded · 1 restarts",
            "partition ward 2 for 30s",
            "produced 12,345 · delivered 12,300 · dup 17 · buffered 45 · dropped 0 · lost 4 · unexplained at end · rejected 2",
            "? help · q quit · ←→ ward 0 · ↑↓ aggregator 0 · l latency",
        ],
    );
    assert!(
        !text.contains("worst of"),
        "one cell per node when there is room:\n{text}"
    );
    // The throughput chart has a time axis when it has the rows for one:
    // the fixture holds 65 one-second points.
    let axis = lines(&buf)
        .into_iter()
        .find(|l| l.contains("-64s"))
        .unwrap_or_else(|| panic!("no time axis:\n{text}"));
    assert!(axis.contains("now"), "{axis}");
    // Without a status there is no dangling separator after the key hints.
    let footer = lines(&buf).pop().unwrap();
    assert!(footer.trim_end().ends_with("l latency"), "{footer:?}");
    // The 80×24 header drops the seed and broker rather than cut them.
    let small = screen(&render(&state(snapshot(3, 20), true), 80, 24));
    let header = small.lines().next().unwrap();
    assert!(
        !header.contains("seed 42") || header.contains("seed 4242"),
        "{header}"
    );
    assert!(header.contains("1:05 / 10:00"), "{header}");
    assert!(
        !small.contains("-64s"),
        "at 80×24 the chart keeps its rows for lines:\n{small}"
    );
}

#[test]
fn ten_thousand_nodes_are_grouped_and_a_single_failure_still_shows() {
    let mut s = snapshot(10, 1000);
    // Ward 7 fully healthy except one down node.
    s.nodes_down = vec![7_500];
    s.nodes_suspected.clear();
    let buf = render(&state(s, true), 80, 24);
    let text = screen(&buf);
    assert_shows(&text, &["worst of"]);
    let w7 = map_row(&buf, 7);
    assert_eq!(w7.matches('X').count(), 1, "{text}");
    let w6 = map_row(&buf, 6);
    assert!(
        !w6[..w6.find("W7").unwrap_or(w6.len())].contains('X'),
        "{text}"
    );
    for ward in 0..10 {
        map_row(&buf, ward);
    }
}

#[test]
fn no_color_leaves_every_cell_uncoloured() {
    let coloured = render(&state(snapshot(3, 20), true), 120, 40);
    let plain = render(&state(snapshot(3, 20), false), 120, 40);
    let colours = |b: &Buffer| {
        b.content()
            .iter()
            .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
            .count()
    };
    assert!(colours(&coloured) > 50, "the coloured render uses colour");
    assert_eq!(colours(&plain), 0, "NO_COLOR: no colour at all");
    // Without colour the glyphs alone still tell the states apart.
    assert_eq!(&map_row(&plain, 1)[4..9], ".....");
    assert_eq!(screen(&coloured), screen(&plain), "same text either way");
}

#[test]
fn the_latency_window_switches_between_recent_and_whole_run() {
    let mut st = state(snapshot(3, 20), true);
    let recent = screen(&render(&st, 100, 30));
    assert_shows(&recent, &["last 10 s", "p99 3.4"]);
    st.latency_window = LatencyWindow::Whole;
    let whole = screen(&render(&st, 100, 30));
    assert_shows(&whole, &["whole run", "p99 7.9"]);
    assert!(!whole.contains("p99 3.4"));
}

#[test]
fn help_lists_every_key_and_pause_is_marked() {
    let mut st = state(snapshot(3, 20), true);
    st.help = true;
    st.paused = true;
    let text = screen(&render(&st, 80, 24));
    for (key, what) in HELP {
        assert!(text.contains(key), "help shows {key:?}:\n{text}");
        assert!(text.contains(what), "help says {what:?}:\n{text}");
    }
    assert!(text.lines().next().unwrap().contains("PAUSED"), "{text}");
}

#[test]
fn the_final_screen_shows_the_settled_ledger_and_the_report() {
    let mut st = state(snapshot(3, 20), true);
    st.finished = Some(Finished {
        ledger: LedgerRow {
            produced: 12_400,
            delivered: 12_396,
            duplicates: 17,
            dropped_overflow: 0,
            lost_on_crash: 4,
            still_buffered: 0,
            unexplained: 0,
            forged_acks_refused: 0,
        },
        slo: Vec::new(),
        report: PathBuf::from("/tmp/run/report.json"),
        interrupted: true,
    });
    let text = screen(&render(&st, 80, 24));
    assert_shows(
        &text,
        &[
            "Run stopped early",
            "12,396",
            "every sample accounted for",
            "/tmp/run/report.json",
            "unexpl 0",
            "done",
        ],
    );
    st.finished.as_mut().unwrap().ledger.unexplained = 3;
    let text = screen(&render(&st, 80, 24));
    assert_shows(&text, &["SAMPLES UNACCOUNTED FOR", "UNEXPL 3"]);
    let wide = screen(&render(&st, 160, 40));
    assert_shows(&wide, &["UNEXPLAINED 3"]);
}

#[test]
fn before_the_first_snapshot_it_says_what_it_is_waiting_for() {
    let text = screen(&render(&DashboardState::new(true), 80, 24));
    assert_shows(&text, &["starting the broker"]);
}

#[test]
fn any_terminal_size_renders_without_panicking() {
    let st = state(snapshot(4, 250), true);
    let mut help = st.clone();
    help.help = true;
    for width in (1..=130).step_by(7) {
        for height in (1..=45).step_by(4) {
            render(&st, width, height);
            render(&help, width, height);
        }
    }
}

#[test]
fn a_terminal_too_small_for_the_panels_shows_a_line_for_each() {
    let st = state(snapshot(3, 20), true);
    let text = screen(&render(&st, 50, 14));
    assert_shows(
        &text,
        &[
            "1:05 / 10:00",
            "pub 61/s · del 60/s · ack 59/s",
            "p50 1.5 · p99 3.4",
            "nodes 1 down · 1 suspected · aggregators 1/2 up",
            "incident 1:00 CRIT ward 0 node 7: patient",
            "(4 open)",
            "event 0:40 [dashboard] kill aggregator 1",
            "50×14 is too small for the panels; they need 60×20",
            "prod 12,345",
            "? help",
        ],
    );
    assert!(!text.contains("Throughput/s"), "no panels:\n{text}");
    // From the minimum size up, the panels (and so the alerts) are back.
    let (w, h) = crate::view::MIN_PANELS;
    let text = screen(&render(&st, w, h));
    assert_shows(&text, &["Throughput/s", "Incidents · 4 open", "1:00 CRIT"]);
    // Help and the final screen still open over the compact view.
    let mut help = st.clone();
    help.help = true;
    assert_shows(&screen(&render(&help, 50, 14)), &["Keys"]);
}

#[test]
fn the_clock_counts_days_once_a_virtual_run_passes_one() {
    use std::time::Duration;
    let clock = crate::view::clock;
    assert_eq!(clock(Duration::from_secs(65)), "1:05");
    assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    assert_eq!(clock(Duration::from_secs(86_399)), "23:59:59");
    assert_eq!(
        clock(Duration::from_secs(4 * 86_400 + 11 * 3600 + 2 * 60 + 5)),
        "4d11:02:05"
    );
}

#[test]
fn a_shard_shows_the_whole_run_beside_its_own_part() {
    let mut s = snapshot(3, 20);
    s.whole_run = Some(vitalmesh_sim::shard::WholeRun {
        shards_heard: 2,
        count: 3,
        produced: 9_000,
        delivered: 8_765,
        connected: 120,
    });
    let text = screen(&render(&state(s, true), 200, 60));
    assert_shows(
        &text,
        &["whole run 2/3 shards: 120 connected, 8,765 delivered"],
    );
    let text = screen(&render(&state(snapshot(3, 20), true), 200, 60));
    assert!(!text.contains("whole run"), "an unsharded run: {text}");
}
