//! Drawing. Every function here reads [`DashboardState`] and writes into a
//! frame; none changes anything, so a frame can be redrawn at will and
//! tested from a fixed state with ratatui's `TestBackend`.
//!
//! Layout (80×24 at least; extra rows go to the map and the lists):
//!
//! ```text
//! header: scenario · seed · elapsed/total · mode · phase · broker · connected
//! ┌ throughput ────────────┐┌ end-to-end latency ────┐
//! ┌ nodes by ward ─────────┐┌ aggregators ───────────┐
//! ┌ alerts ────────────────┐┌ events ────────────────┐
//! ledger line
//! keys and status line
//! ```

use std::time::Duration;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Bar, BarChart, BarGroup, Block, Borders, Cell, Chart, Clear, Dataset, GraphType, List,
    ListItem, Paragraph, Row, Table, Widget, Wrap,
};
use vitalmesh_core::incident::Incident;
use vitalmesh_core::news2::Risk;
use vitalmesh_core::{Alert, AlertKind};
use vitalmesh_sim::NodeHealth;
use vitalmesh_sim::report::{Percentiles, thousands};
use vitalmesh_sim::{Phase, Snapshot, TimelineEntry};

use crate::keys::HELP;
use crate::state::Finished;
use crate::state::{DashboardState, LatencyWindow, StatusKind};

/// Colours, or none (`NO_COLOR`).
#[derive(Debug, Clone, Copy)]
struct Palette {
    color: bool,
}

impl Palette {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
}

/// What the map shows for one node (or the worst of a group of nodes),
/// worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapCell {
    /// Declared down by its aggregator.
    Down,
    /// Crashed or battery flat.
    Crashed,
    /// Missing samples: suspected, not yet declared down.
    Suspected,
    /// The detectors hold a sensor suspect ("check sensor" alert).
    SensorSuspect,
    /// A sensor fault is active that the detectors have not flagged
    /// (ground truth, shown only when asked for with `t`).
    SensorFault,
    /// Battery low.
    LowBattery,
    /// Holding unacknowledged samples.
    Buffering,
    /// Not connected, nothing held.
    Offline,
    /// Connected, delivering.
    Healthy,
    /// Switched off or stopped.
    Off,
    /// No patient in the bed.
    Empty,
    /// Not started yet.
    Pending,
}

impl MapCell {
    /// Every state, for the legend.
    pub const ALL: [Self; 12] = [
        Self::Healthy,
        Self::Suspected,
        Self::Down,
        Self::Buffering,
        Self::LowBattery,
        Self::SensorSuspect,
        Self::SensorFault,
        Self::Crashed,
        Self::Offline,
        Self::Off,
        Self::Empty,
        Self::Pending,
    ];

    /// The glyph: distinct without colour.
    pub fn glyph(self) -> char {
        match self {
            Self::Healthy => '.',
            Self::Suspected => '?',
            Self::Down => 'X',
            Self::Buffering => 'b',
            Self::LowBattery => 'l',
            Self::SensorSuspect => 's',
            Self::SensorFault => 'S',
            Self::Crashed => 'x',
            Self::Offline => 'o',
            Self::Off => '-',
            Self::Empty => '_',
            Self::Pending => ' ',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Healthy => "ok",
            Self::Suspected => "suspect",
            Self::Down => "down",
            Self::Buffering => "buffer",
            Self::LowBattery => "battery",
            Self::SensorSuspect => "check sensor",
            Self::SensorFault => "faulty (truth)",
            Self::Crashed => "crash",
            Self::Offline => "offline",
            Self::Off => "off",
            Self::Empty => "empty bed",
            Self::Pending => "pending",
        }
    }

    fn color(self) -> Color {
        match self {
            Self::Healthy => Color::Green,
            Self::Suspected => Color::Yellow,
            Self::Down => Color::Red,
            Self::Buffering => Color::Cyan,
            Self::LowBattery => Color::Magenta,
            Self::SensorSuspect => Color::LightYellow,
            Self::SensorFault => Color::LightMagenta,
            Self::Crashed => Color::LightRed,
            Self::Offline => Color::Blue,
            Self::Off | Self::Empty | Self::Pending => Color::DarkGray,
        }
    }

    /// The cell of one node: what the aggregators concluded (down,
    /// suspected, sensor suspect) over what the node itself knows; the
    /// simulator's ground truth of a sensor fault only if `truth` is asked
    /// for, and then only where the detectors have not (yet) seen it.
    fn of(
        health: NodeHealth,
        down: bool,
        suspected: bool,
        sensor_suspect: bool,
        truth: bool,
    ) -> Self {
        if down {
            return Self::Down;
        }
        match health {
            NodeHealth::Crashed | NodeHealth::Flat => Self::Crashed,
            _ if suspected => Self::Suspected,
            _ if sensor_suspect => Self::SensorSuspect,
            NodeHealth::SensorFault if truth => Self::SensorFault,
            NodeHealth::LowBattery => Self::LowBattery,
            NodeHealth::Empty => Self::Empty,
            NodeHealth::Buffering => Self::Buffering,
            NodeHealth::Offline | NodeHealth::OutOfRange => Self::Offline,
            NodeHealth::Healthy | NodeHealth::SensorFault => Self::Healthy,
            NodeHealth::Stopped => Self::Off,
            NodeHealth::Pending => Self::Pending,
        }
    }
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame<'_>, state: &DashboardState) {
    let area = frame.area();
    let buf = frame.buffer_mut();
    render(area, buf, state);
}

/// Renders into a buffer (what [`draw`] does, without a terminal).
pub fn render(area: Rect, buf: &mut Buffer, state: &DashboardState) {
    let p = Palette { color: state.color };
    let Some(s) = &state.snapshot else {
        Paragraph::new(vec![
            Line::from(Span::styled(
                "vitalmesh",
                Style::default().add_modifier(Modifier::BOLD),
            )),
            Line::from("starting the broker and the aggregators…"),
        ])
        .render(area, buf);
        return;
    };
    if area.width < MIN_PANELS.0 || area.height < MIN_PANELS.1 {
        compact(area, buf, s, state, p);
    } else {
        panels(area, buf, s, state, p);
    }
    if let Some(f) = &state.finished {
        finished(area, buf, f, p);
    } else if state.help {
        help(area, buf);
    }
}

/// Below this (columns, rows) the panels would hide the alerts and events
/// behind their borders; the compact view shows them as lines instead.
pub const MIN_PANELS: (u16, u16) = (60, 20);

fn panels(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let rest = area.height.saturating_sub(3);
    let top = (rest * 3 / 12).max(6).min(rest);
    let middle = (rest * 5 / 12).max(7).min(rest - top);
    let bottom = rest - top - middle;
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(top),
        Constraint::Length(middle),
        Constraint::Length(bottom),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .split(area);
    header(rows[0], buf, s, state, p);
    let [left, right] = halves(rows[1]);
    throughput(left, buf, s, p);
    latency(right, buf, s, state, p);
    // The aggregator table needs 34 columns whole; the map takes the rest.
    let aggs_width = (rows[2].width * 2 / 5).max(34).min(rows[2].width);
    let [map, aggs] = {
        let v = Layout::horizontal([Constraint::Fill(1), Constraint::Length(aggs_width)])
            .split(rows[2]);
        [v[0], v[1]]
    };
    health_map(map, buf, s, state, p);
    aggregators(aggs, buf, s, state, p);
    // Incidents are what a person acts on; the event log only says why.
    let [alerts_area, events_area] = split(rows[3], 56);
    if state.show_alerts {
        alerts(alerts_area, buf, s, p);
    } else {
        incidents(alerts_area, buf, s, p);
    }
    events(events_area, buf, s, p);
    ledger(rows[4], buf, s, state, p);
    footer(rows[5], buf, state, p);
}

/// One line per panel, most important first, for a terminal too small for
/// the panels: the run is still worth watching (and stopping) from there.
fn compact(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .split(area);
    header(rows[0], buf, s, state, p);
    let (pct, _, _) = latency_in_window(s, state);
    let aggregators_up = s.aggregators.iter().filter(|a| a.up).count();
    let mut lines = vec![
        Line::from(format!(
            "pub {}/s · del {}/s · ack {}/s",
            thousands(s.rate.published),
            thousands(s.rate.delivered),
            thousands(s.rate.acked)
        )),
        Line::from(format!(
            "p50 {:.1} · p99 {:.1} · max {:.1} ms",
            pct.p50_ms, pct.p99_ms, pct.max_ms
        )),
        Line::from(format!(
            "nodes {} down · {} suspected · aggregators {aggregators_up}/{} up",
            s.nodes_down.len(),
            s.nodes_suspected.len(),
            s.aggregators.len()
        )),
    ];
    // The worst open incident, the newest of equals.
    let worst = s
        .incidents
        .iter()
        .filter(|i| i.is_open())
        .max_by_key(|i| (i.severity, i.opened_at));
    if let Some(i) = worst.or(s.incidents.first()) {
        lines.push(Line::from(format!(
            "incident {} ({} open)",
            incident_line(s, i).trim_start(),
            s.incidents_open
        )));
    }
    if let Some(e) = s.timeline.last() {
        lines.push(Line::from(format!("event {}", event_line(e).trim_start())));
    }
    lines.push(Line::from(Span::styled(
        format!(
            "{}×{} is too small for the panels; they need {}×{}",
            area.width, area.height, MIN_PANELS.0, MIN_PANELS.1
        ),
        p.fg(Color::DarkGray),
    )));
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .render(rows[1], buf);
    ledger(rows[2], buf, s, state, p);
    footer(rows[3], buf, state, p);
}

fn halves(r: Rect) -> [Rect; 2] {
    split(r, 50)
}

fn split(r: Rect, left_percent: u16) -> [Rect; 2] {
    let parts =
        Layout::horizontal([Constraint::Percentage(left_percent), Constraint::Fill(1)]).split(r);
    [parts[0], parts[1]]
}

/// `1:05`, `1:02:05`, or `4d11:02:05` once a (virtual) run passes a day.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!(
            "{}d{:02}:{:02}:{:02}",
            s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60
        )
    } else if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn phase(s: &Snapshot, state: &DashboardState) -> &'static str {
    if state.finished.is_some() {
        return "done";
    }
    if state.stopping {
        return "stopping";
    }
    match s.phase {
        Phase::Starting => "starting",
        Phase::Ramping => "connecting",
        Phase::Running => "running",
        Phase::Draining => "draining",
        Phase::Done => "done",
    }
}

fn header(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    // (priority, item): on a narrow terminal the least important items go
    // first; the rest keep their order. The seed and broker are also in the
    // report and on stderr.
    let mut items: Vec<(u8, Span<'static>)> = vec![
        (6, Span::styled("vitalmesh", bold)),
        (0, Span::styled(s.scenario.clone(), bold)),
        (
            0,
            Span::raw(format!("{} / {}", clock(s.elapsed), clock(s.planned))),
        ),
        (1, Span::styled(phase(s, state), p.fg(Color::Cyan))),
        (
            2,
            Span::raw(format!(
                "{}/{} connected",
                thousands(s.connected.max(0) as u64),
                thousands(u64::from(s.nodes))
            )),
        ),
        (
            3,
            Span::raw(match s.speed {
                Some(x) => format!("{} ×{x:.0}", s.mode.label()),
                None => s.mode.label().to_owned(),
            }),
        ),
        (4, Span::raw(format!("seed {}", s.seed))),
        (5, Span::raw(format!("broker {}", s.broker_url))),
    ];
    // A shard of a sharded run: the whole run as the shards report it.
    if let Some(w) = s.whole_run {
        items.insert(
            5,
            (
                2,
                Span::styled(
                    format!(
                        "whole run {}/{} shards: {} connected, {} delivered",
                        w.shards_heard,
                        w.count,
                        thousands(w.connected.max(0) as u64),
                        thousands(w.delivered)
                    ),
                    p.fg(Color::Cyan),
                ),
            ),
        );
    }
    if state.paused {
        items.insert(
            0,
            (
                0,
                Span::styled("PAUSED", bold.add_modifier(Modifier::REVERSED)),
            ),
        );
    }
    const SEP: &str = " │ ";
    let mut budget = area.width as usize;
    let mut keep = vec![false; items.len()];
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].0);
    for i in order {
        let width = items[i].1.width() + SEP.len();
        if width <= budget + SEP.len() {
            budget = budget.saturating_sub(width);
            keep[i] = true;
        }
    }
    let mut spans = Vec::new();
    for ((_, span), _) in items.into_iter().zip(keep).filter(|(_, kept)| *kept) {
        if !spans.is_empty() {
            spans.push(Span::styled(SEP, p.fg(Color::DarkGray)));
        }
        spans.push(span);
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

fn titled(title: String) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(title)
}

fn throughput(area: Rect, buf: &mut Buffer, s: &Snapshot, p: Palette) {
    // The title is the legend: each figure in its line's colour.
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Line::from(vec![
            Span::raw(" Throughput/s "),
            Span::styled(
                format!("pub {} ", thousands(s.rate.published)),
                p.fg(Color::Blue),
            ),
            Span::styled(
                format!("del {} ", thousands(s.rate.delivered)),
                p.fg(Color::Green),
            ),
            Span::styled(
                format!("ack {} ", thousands(s.rate.acked)),
                p.fg(Color::Magenta),
            ),
        ]));
    let inner = block.inner(area);
    block.render(area, buf);
    let width = inner.width.saturating_sub(6) as usize;
    let history: Vec<_> = s.history.iter().rev().take(width.max(1)).rev().collect();
    if history.is_empty() || inner.height < 2 {
        Paragraph::new("waiting for the first second…").render(inner, buf);
        return;
    }
    let series = |f: fn(&vitalmesh_sim::RatePoint) -> u64| -> Vec<(f64, f64)> {
        history
            .iter()
            .enumerate()
            .map(|(i, r)| (i as f64, f(r) as f64))
            .collect()
    };
    let published = series(|r| r.published);
    let delivered = series(|r| r.delivered);
    let acked = series(|r| r.acked);
    let max = [&published, &delivered, &acked]
        .iter()
        .flat_map(|v| v.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max)
        * 1.15;
    let datasets = vec![
        // Drawn in this order, so where lines meet, delivered is on top.
        Dataset::default()
            .name("pub")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(p.fg(Color::Blue))
            .data(&published),
        Dataset::default()
            .name("ack")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(p.fg(Color::Magenta))
            .data(&acked),
        Dataset::default()
            .name("del")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(p.fg(Color::Green))
            .data(&delivered),
    ];
    let span = (history.len().max(2) - 1) as f64;
    let mut x_axis = Axis::default().bounds([0.0, span]);
    // A time axis costs two rows; below eight the lines matter more.
    if inner.height >= 8 {
        x_axis = x_axis
            .labels([Line::from(format!("-{span}s")), Line::from("now")])
            .style(p.fg(Color::DarkGray));
    }
    Chart::new(datasets)
        .x_axis(x_axis)
        .y_axis(
            Axis::default()
                .bounds([0.0, max])
                .labels([Line::from("0"), Line::from(short(max as u64))]),
        )
        .legend_position(None)
        .render(inner, buf);
}

fn short(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The percentiles, histogram buckets and name of the selected window.
fn latency_in_window<'s>(
    s: &'s Snapshot,
    state: &DashboardState,
) -> (&'s Percentiles, &'s [(f64, u64)], &'static str) {
    match state.latency_window {
        LatencyWindow::Recent => (&s.latency_recent, &s.latency_recent_buckets, "last 10 s"),
        LatencyWindow::Whole => (&s.latency_total, &s.latency_total_buckets, "whole run"),
    }
}

fn latency(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let (pct, buckets, window) = latency_in_window(s, state);
    let block = titled(format!(" End-to-end latency (ms) · {window} "));
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 {
        return;
    }
    let line = Line::from(vec![
        Span::raw(format!("p50 {:.1}  p90 {:.1}  ", pct.p50_ms, pct.p90_ms)),
        Span::styled(
            format!("p99 {:.1}", pct.p99_ms),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  p99.9 {:.1}  max {:.1}",
            pct.p99_9_ms, pct.max_ms
        )),
    ]);
    let [first, rest] = {
        let v = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).split(inner);
        [v[0], v[1]]
    };
    Paragraph::new(line).render(first, buf);
    if rest.height < 2 {
        return;
    }
    // Only the range that has data, and as many bars as fit.
    let first_used = buckets.iter().position(|(_, n)| *n > 0).unwrap_or(0);
    let last_used = buckets.iter().rposition(|(_, n)| *n > 0).unwrap_or(0);
    let fit = (rest.width / 4).max(1) as usize;
    let end = (last_used + 1)
        .max(first_used + fit.min(buckets.len()))
        .min(buckets.len());
    let start = end.saturating_sub(fit).min(first_used);
    let bars: Vec<Bar<'_>> = buckets[start..end.min(start + fit)]
        .iter()
        .map(|(upper, n)| {
            let label = if *upper >= 1000.0 {
                format!("{:.0}s", upper / 1000.0)
            } else if *upper >= 10.0 {
                format!("{upper:.0}")
            } else {
                format!("{upper}")
            };
            Bar::default()
                .value(*n)
                .label(Line::from(label))
                .text_value(String::new())
                .style(p.fg(Color::Yellow))
        })
        .collect();
    BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(3)
        .bar_gap(1)
        .render(rest, buf);
}

fn health_map(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let inner = titled(String::new()).inner(area);
    let wards = usize::from(s.population.wards.max(1));
    let per_ward = s.population.nodes_per_ward.max(1) as usize;
    let legend = legend_spans(p);
    let legend_width: usize = legend.iter().map(Span::width).sum::<usize>();
    let legend_rows = legend_width.div_ceil(inner.width.max(1) as usize);
    let legend_rows = if inner.height as usize >= legend_rows + 2 {
        legend_rows
    } else {
        0
    };
    let map_rows = (inner.height as usize - legend_rows).max(1);
    // Wards side by side when there are more wards than rows; each ward
    // keeps its own label and segment, so a boundary is always visible.
    let wards_per_row = wards.div_ceil(map_rows);
    const LABEL: usize = 4;
    // Each ward ends with its detectors' gauge: two columns.
    const GAUGE: usize = 2;
    let segment = (inner.width as usize / wards_per_row).max(LABEL + GAUGE + 1);
    let cells = segment - LABEL - GAUGE - usize::from(wards_per_row > 1);
    let group = per_ward.div_ceil(cells.max(1));
    let grouping = if group > 1 {
        format!("1 cell = worst of {group} · ")
    } else {
        String::new()
    };
    let block = titled(format!(
        " Nodes by ward · {grouping}{} down · {} suspected ",
        s.nodes_down.len(),
        s.nodes_suspected.len()
    ));
    block.render(area, buf);
    if inner.height == 0 || inner.width < 8 {
        return;
    }
    let down: std::collections::HashSet<u32> = s.nodes_down.iter().copied().collect();
    let suspected: std::collections::HashSet<u32> = s.nodes_suspected.iter().copied().collect();
    let sensors: std::collections::HashSet<u32> = s.sensor_suspect.iter().copied().collect();
    let cell_of = |node: usize| -> MapCell {
        let health = s
            .node_health
            .get(node)
            .copied()
            .unwrap_or(NodeHealth::Pending);
        let n = node as u32;
        MapCell::of(
            health,
            down.contains(&n),
            suspected.contains(&n),
            sensors.contains(&n),
            state.show_truth,
        )
    };
    for ward in 0..wards {
        let (row, column) = (ward / wards_per_row, ward % wards_per_row);
        if row >= map_rows {
            break;
        }
        let y = inner.y + row as u16;
        let x0 = inner.x + (column * segment) as u16;
        let label_style = if ward == usize::from(state.selected_ward) {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        buf.set_stringn(x0, y, format!("W{ward:<2}"), LABEL - 1, label_style);
        let first = ward * per_ward;
        let end = first + per_ward;
        for (i, start) in (first..end).step_by(group).enumerate().take(cells) {
            let worst = (start..(start + group).min(end))
                .map(cell_of)
                .min()
                .unwrap_or(MapCell::Pending);
            buf.set_string(
                x0 + (LABEL + i) as u16,
                y,
                worst.glyph().to_string(),
                p.fg(worst.color()),
            );
        }
        let (gauge, color) = ward_gauge(s, ward as u16);
        buf.set_string(
            x0 + (LABEL + cells.min(per_ward.div_ceil(group))) as u16 + 1,
            y,
            gauge,
            p.fg(color),
        );
    }
    if legend_rows > 0 {
        let y = inner.y + inner.height - legend_rows as u16;
        Paragraph::new(Line::from(legend))
            .wrap(Wrap { trim: true })
            .render(
                Rect {
                    y,
                    height: legend_rows as u16,
                    ..inner
                },
                buf,
            );
    }
}

/// A ward's detectors in one glyph and a mark: how close the most excited
/// detector is to its threshold (`▁` calm … `█` at it), `!` while one
/// alarms, `·` while all still warm up, blank before the first bucket.
pub fn ward_gauge(s: &Snapshot, ward: u16) -> (String, Color) {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(w) = s.wards.iter().find(|w| w.ward == ward) else {
        return ("  ".into(), Color::DarkGray);
    };
    match w.level {
        _ if !w.alarming.is_empty() => ("█!".into(), Color::Red),
        None => ("· ".into(), Color::DarkGray),
        Some(level) => {
            let i = ((level.max(0.0) * 8.0) as usize).min(7);
            let color = if level >= 0.75 {
                Color::Yellow
            } else {
                Color::Green
            };
            (format!("{} ", LEVELS[i]), color)
        }
    }
}

fn legend_spans(p: Palette) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for c in MapCell::ALL.iter().filter(|c| **c != MapCell::Pending) {
        spans.push(Span::styled(c.glyph().to_string(), p.fg(c.color())));
        spans.push(Span::raw(format!(" {}  ", c.name())));
    }
    spans
}

fn aggregators(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let b = &s.broker;
    let restarts = b.process_restarts + b.listener_restarts;
    let broker = Line::from(vec![
        Span::raw(format!(" broker {} · ", b.kind)),
        Span::styled(
            format!("{restarts} restarts"),
            if restarts > 0 {
                p.fg(Color::Yellow)
            } else {
                Style::default()
            },
        ),
        Span::raw(format!(" · {} canary failures ", b.canary_failures)),
    ]);
    let block = titled(" Aggregators ".into()).title_bottom(broker);
    let rows: Vec<Row<'_>> = s
        .aggregators
        .iter()
        .map(|a| {
            let (text, color) = if a.up {
                ("up", Color::Green)
            } else {
                ("DOWN", Color::Red)
            };
            let mut row = Row::new(vec![
                Cell::from(format!("{}", a.id)),
                Cell::from(Span::styled(text, p.fg(color))),
                Cell::from(a.primary.len().to_string()),
                Cell::from(a.standby.len().to_string()),
                Cell::from(thousands(a.ingest_rate)),
                Cell::from(a.stats.nodes_down.to_string()),
                Cell::from(a.restarts.to_string()),
            ]);
            if a.id == state.selected_aggregator {
                row = row.style(Style::default().add_modifier(Modifier::REVERSED));
            }
            row
        })
        .collect();
    Table::new(
        rows,
        [
            Constraint::Length(2),
            Constraint::Length(4),
            Constraint::Length(4),
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Length(4),
            Constraint::Length(3),
        ],
    )
    .header(
        Row::new(vec!["id", "up", "prim", "stby", "in/s", "down", "rst"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(block)
    .render(area, buf);
}

/// Run time, as the header's clock shows it, right-aligned for lists.
fn run_clock(seconds: f64) -> String {
    format!("{:>5}", clock(Duration::from_secs_f64(seconds.max(0.0))))
}

fn since(s: &Snapshot, t: vitalmesh_wire::Timestamp) -> String {
    let micros = t.as_micros() as i128 - s.origin.as_micros() as i128;
    run_clock(micros as f64 / 1e6)
}

/// One alert event (raised or cleared) as a line.
pub fn alert_line(s: &Snapshot, a: &Alert) -> String {
    let cleared = a.cleared_at.is_some();
    let t = since(s, a.cleared_at.unwrap_or(a.raised_at));
    let what = match a.kind {
        AlertKind::PatientRisk { band, news2 } => {
            // The RCP bands; "low-medium" is a single parameter scoring 3.
            let r = match band {
                Risk::High => "HIGH",
                Risk::Medium => "MEDIUM",
                Risk::LowMedium => "LOW-MED",
                Risk::Low => "low",
            };
            if cleared {
                format!("calm    {}", a.scope)
            } else {
                format!("{r:<7} NEWS2 {news2} {}", a.scope)
            }
        }
        AlertKind::Deterioration => {
            format!(
                "{} {}",
                if cleared { "steady " } else { "WORSE  " },
                a.scope
            )
        }
        AlertKind::CheckSensor { sign, check } => {
            if cleared {
                format!("sensor ok {} {}", a.scope, sign.name())
            } else {
                format!("SENSOR  {} {} ({})", a.scope, sign.name(), check.name())
            }
        }
        AlertKind::WardAnomaly {
            method,
            series,
            detector,
        } => {
            let name = s
                .detectors
                .get(usize::from(detector))
                .cloned()
                .unwrap_or_else(|| method.name().into());
            if cleared {
                format!("quiet   {} ({name})", a.scope)
            } else {
                format!("WARD    {}: {} up ({name})", a.scope, series.label())
            }
        }
        AlertKind::NodeDown { .. } => {
            format!(
                "{} {}",
                if cleared { "up     " } else { "DOWN   " },
                a.scope
            )
        }
        AlertKind::NodeLeft => {
            format!(
                "{} {}",
                if cleared { "back   " } else { "left   " },
                a.scope
            )
        }
        AlertKind::AggregatorDown { reason } => {
            if cleared {
                format!("up      {}", a.scope)
            } else {
                format!("DOWN    {} ({})", a.scope, reason.as_str())
            }
        }
        AlertKind::AggregatorLeft => {
            format!(
                "{} {}",
                if cleared { "back   " } else { "left   " },
                a.scope
            )
        }
        AlertKind::AggregatorIsolated { .. } => {
            if cleared {
                format!("up      {} (hears itself again)", a.scope)
            } else {
                format!("CUT OFF {}", a.scope)
            }
        }
    };
    format!("{t} {what}")
}

/// One incident as a line: when, how bad, what, how many alerts.
pub fn incident_line(s: &Snapshot, i: &Incident) -> String {
    let t = since(s, i.opened_at);
    let mark = if i.is_open() {
        match i.severity {
            vitalmesh_core::Severity::Critical => "CRIT",
            vitalmesh_core::Severity::Warning => "WARN",
            vitalmesh_core::Severity::Info => "info",
        }
    } else {
        "done"
    };
    // The count (of more than one alert) goes before the title: a narrow panel cuts the end of the
    // line, and the title leads with where (ward, node) so what is cut is
    // the least telling part.
    match i.members.len() {
        1 => format!("{t} {mark} {}", i.title),
        n => format!("{t} {mark} ×{n} {}", i.title),
    }
}

fn incidents(area: Rect, buf: &mut Buffer, s: &Snapshot, p: Palette) {
    let block = titled(format!(
        " Incidents · {} open of {} · i: alerts ",
        s.incidents_open, s.incidents_total
    ));
    let items: Vec<ListItem<'_>> = s
        .incidents
        .iter()
        .map(|i| {
            let color = match (i.is_open(), i.severity) {
                (false, _) => Color::DarkGray,
                (true, vitalmesh_core::Severity::Critical) => Color::Red,
                (true, vitalmesh_core::Severity::Warning) => Color::Yellow,
                (true, vitalmesh_core::Severity::Info) => Color::Green,
            };
            ListItem::new(Line::from(Span::styled(incident_line(s, i), p.fg(color))))
        })
        .collect();
    List::new(items).block(block).render(area, buf);
}

fn alerts(area: Rect, buf: &mut Buffer, s: &Snapshot, p: Palette) {
    let block = titled(format!(" Alerts · {} · i: incidents ", s.alerts.len()));
    let items: Vec<ListItem<'_>> = s
        .alerts
        .iter()
        .rev()
        .map(|a| {
            let color = match (a.cleared_at, a.severity) {
                (Some(_), _) => Color::Green,
                (None, vitalmesh_core::Severity::Critical) => Color::Red,
                (None, vitalmesh_core::Severity::Warning) => Color::Yellow,
                (None, vitalmesh_core::Severity::Info) => Color::Green,
            };
            ListItem::new(Line::from(Span::styled(alert_line(s, a), p.fg(color))))
        })
        .collect();
    List::new(items).block(block).render(area, buf);
}

/// An event as the log shows it: when, who asked (if a person did), what.
fn event_line(e: &TimelineEntry) -> String {
    let who = if e.source == "dashboard" || e.source == "inject" {
        format!("[{}] ", e.source)
    } else {
        String::new()
    };
    format!("{} {who}{}", run_clock(e.at_s), e.description)
}

fn events(area: Rect, buf: &mut Buffer, s: &Snapshot, p: Palette) {
    let block = titled(format!(" Events · {} ", s.timeline.len()));
    let items: Vec<ListItem<'_>> = s
        .timeline
        .iter()
        .rev()
        .map(|e| {
            let style = if e.error.is_some() {
                p.fg(Color::Red)
            } else {
                Style::default()
            };
            ListItem::new(Line::from(Span::styled(event_line(e), style)))
        })
        .collect();
    List::new(items).block(block).render(area, buf);
}

fn ledger(area: Rect, buf: &mut Buffer, s: &Snapshot, state: &DashboardState, p: Palette) {
    let bad = |n: u64| {
        if n > 0 {
            p.fg(Color::Yellow)
        } else {
            Style::default()
        }
    };
    // While running, "unexplained" cannot be told from "in flight"; the
    // final ledger settles it.
    let unexplained = |long: bool| {
        let name = if long { "unexplained" } else { "unexpl" };
        match &state.finished {
            Some(f) if f.ledger.unexplained == 0 => {
                Span::styled(format!("{name} 0"), p.fg(Color::Green))
            }
            Some(f) => Span::styled(
                format!(
                    "{} {}",
                    name.to_uppercase(),
                    thousands(f.ledger.unexplained)
                ),
                p.fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            None if long => Span::raw("unexplained at end"),
            None => Span::raw("unexpl at end"),
        }
    };
    // (long name, short name, value, style)
    let figures = [
        ("produced", "prod", s.produced, Style::default()),
        ("delivered", "deliv", s.delivered, Style::default()),
        ("dup", "dup", s.duplicates, Style::default()),
        (
            "buffered",
            "buf",
            s.buffered.max(0) as u64,
            Style::default(),
        ),
        (
            "dropped",
            "drop",
            s.dropped_overflow,
            bad(s.dropped_overflow),
        ),
        ("lost", "lost", s.lost_on_crash, bad(s.lost_on_crash)),
        ("rejected", "rej", s.rejected, Style::default()),
    ];
    let line = |long: bool| {
        let sep = if long { " · " } else { " " };
        let mut spans = vec![Span::styled(
            "Ledger ",
            Style::default().add_modifier(Modifier::BOLD),
        )];
        for (i, (name, short, n, style)) in figures.iter().enumerate() {
            if i > 0 {
                spans.push(Span::raw(sep));
            }
            if i == 6 {
                spans.push(unexplained(long));
                spans.push(Span::raw(sep));
            }
            spans.push(Span::styled(
                format!("{} {}", if long { name } else { short }, thousands(*n)),
                *style,
            ));
        }
        Line::from(spans)
    };
    let long = line(true);
    let fits = long.width() <= area.width as usize;
    Paragraph::new(if fits { long } else { line(false) }).render(area, buf);
}

fn footer(area: Rect, buf: &mut Buffer, state: &DashboardState, p: Palette) {
    let hint = format!(
        "? help · q quit · ←→ ward {} · ↑↓ aggregator {} · l latency",
        state.selected_ward, state.selected_aggregator
    );
    let status = state.status.as_ref().map(|(text, kind)| {
        let color = match kind {
            StatusKind::Info => Color::Green,
            StatusKind::Error => Color::Red,
        };
        Span::styled(text.clone(), p.fg(color).add_modifier(Modifier::BOLD))
    });
    // The outcome of the last key matters more than the reminder of keys.
    let status_width = status.as_ref().map_or(0, |s| s.width() + " · ".len());
    let hint = if hint.chars().count() + status_width > area.width as usize {
        format!(
            "? help · ward {} · agg {}",
            state.selected_ward, state.selected_aggregator
        )
    } else {
        hint
    };
    let mut spans = vec![Span::styled(hint, p.fg(Color::DarkGray))];
    if let Some(status) = status {
        spans.push(Span::styled(" · ", p.fg(Color::DarkGray)));
        spans.push(status);
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

/// A centred box of at most `width` × `height`, cleared.
fn popup(area: Rect, buf: &mut Buffer, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    Clear.render(popup, buf);
    popup
}

/// The final word: the settled ledger, the SLO verdicts, the report.
fn finished(area: Rect, buf: &mut Buffer, f: &Finished, p: Palette) {
    let l = &f.ledger;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let row = |name: &str, n: u64| Line::from(format!("  {name:<20}{:>14}", thousands(n)));
    let mut lines = vec![
        Line::from(Span::styled(
            if f.interrupted {
                "Run stopped early"
            } else {
                "Run finished"
            },
            bold,
        )),
        row("produced", l.produced),
        row("delivered", l.delivered),
        row("duplicates", l.duplicates),
        row("still buffered", l.still_buffered),
        row("dropped (overflow)", l.dropped_overflow),
        row("lost (node crash)", l.lost_on_crash),
    ];
    let verdict = format!(
        "  {:<20}{:>14}  {}",
        "unexplained",
        thousands(l.unexplained),
        l.verdict()
    );
    let color = if l.unexplained == 0 {
        Color::Green
    } else {
        Color::Red
    };
    lines.push(Line::from(Span::styled(
        verdict,
        p.fg(color).add_modifier(Modifier::BOLD),
    )));
    for r in &f.slo {
        let (mark, color) = if r.passed {
            ("pass", Color::Green)
        } else {
            ("FAIL", Color::Red)
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("  {mark} "),
                p.fg(color).add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "{} {} {} {}",
                r.name,
                r.show(r.actual),
                r.comparison,
                r.show(r.limit)
            )),
        ]));
    }
    lines.push(Line::from(format!("Report: {}", f.report.display())));
    lines.push(Line::from(Span::styled(
        "q / Enter: leave (the summary stays on screen)",
        p.fg(Color::DarkGray),
    )));
    let area = popup(area, buf, 72, lines.len() as u16 + 2);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(Block::default().borders(Borders::ALL).title(" Done "))
        .render(area, buf);
}

fn help(area: Rect, buf: &mut Buffer) {
    let popup = popup(area, buf, 62, HELP.len() as u16 + 2);
    let lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<10}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Keys (? to close) "),
        )
        .render(popup, buf);
}
