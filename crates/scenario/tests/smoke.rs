use vitalmesh_scenario::{Action, parse};

const GOOD: &str = r#"
[scenario]
name = "t"
duration = "60s"

[population]
wards = 4
nodes_per_ward = 10

[[event]]
at = "10s"
action = "partition"
ward = 1
for = "20s"

[[event]]
at = "5s"
action = "kill_aggregator"
aggregator = 2
"#;

#[test]
fn a_valid_file_parses_in_time_order() {
    let s = parse("good.toml", GOOD).unwrap();
    assert_eq!(s.events.len(), 2);
    assert_eq!(s.events[0].action, Action::KillAggregator { aggregator: 2 });
    assert_eq!(s.events[1].origin, "event[0]");
}

#[test]
fn errors_name_file_line_path_value_and_expectation() {
    let bad = GOOD
        .replace("at = \"10s\"", "at = \"90s\"")
        .replace("aggregator = 2", "aggregator = 9");
    let err = parse("bad.toml", &bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml:11: event[0].at: '90s' is after the scenario end '60s'"),
        "{err}"
    );
    assert!(err.contains("bad.toml:19: event[1].aggregator: '9' does not exist; expected an aggregator from 0 to 3"), "{err}");
}

#[test]
fn stage_one_errors_carry_the_field_path() {
    let bad = GOOD.replace("wards = 4", "wards = \"four\"");
    let err = parse("bad.toml", &bad).unwrap_err().to_string();
    assert!(err.starts_with("bad.toml:7: population.wards: "), "{err}");
    let bad = GOOD.replace("for = \"20s\"", "for = \"20s\"\nfour = 1");
    let err = parse("bad.toml", &bad).unwrap_err().to_string();
    assert!(
        err.contains("event[0].four: 'four' is not a known field"),
        "{err}"
    );
}
