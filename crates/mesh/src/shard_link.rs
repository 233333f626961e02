//! A shard's link to the other shards of a sharded run: one MQTT client
//! that publishes this shard's [`ShardStatus`] twice a second on
//! `{root}/v1/shard/{I}` and reads everyone's from `{root}/v1/shard/+`.
//!
//! What the messages mean — when the schedule starts, the clock offsets,
//! the whole run's figures — is [`ShardBoard`]'s (pure, in
//! `vitalmesh-sim`); this module only moves them. Status messages are QoS 0
//! and repeated, so a lost one costs nothing and a shard that subscribes
//! late still hears everyone's ready time.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vitalmesh_sim::merge::PartClock;
use vitalmesh_sim::shard::{ShardBoard, ShardStatus, WholeRun};
use vitalmesh_wire::Timestamp;

use crate::MeshError;
use crate::clock::RunClock;
use crate::mqtt::{ConnectOptions, Connection, Incoming, QoS};
use crate::node_driver::NodeRuntime;
use crate::run::ShardPlan;

/// How often a shard says how it goes.
const STATUS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Shared {
    board: ShardBoard,
    mine: ShardStatus,
    stopping: bool,
}

/// The running link.
#[derive(Debug)]
pub(crate) struct ShardLink {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShardLink {
    /// Connects to the broker (in the background: it retries until it is
    /// stopped) and starts saying how this shard goes.
    pub(crate) fn start(plan: &ShardPlan, rt: Arc<NodeRuntime>) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            board: ShardBoard::new(plan.run_id.clone(), plan.shard),
            mine: ShardStatus {
                phase: "starting".into(),
                ..ShardStatus::default()
            },
            stopping: false,
        }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run_link(plan.shard.index, rt, shared.clone(), wake.clone()));
        Self { shared, wake, task }
    }

    /// This shard is ready: its aggregators agree.
    pub(crate) fn ready(&self, now: Timestamp) {
        lock(&self.shared).board.ready(now.as_micros());
        self.wake.notify_one();
    }

    /// Waits until every shard is ready and returns time zero of the
    /// schedule; gives up after `wait`, naming the shards not heard from.
    pub(crate) async fn start_at(
        &self,
        clock: RunClock,
        wait: Duration,
    ) -> Result<Timestamp, MeshError> {
        let deadline = Instant::now() + wait;
        loop {
            let (start, missing) = {
                let s = lock(&self.shared);
                (s.board.start_at_us(), s.board.not_ready())
            };
            if let Some(at) = start {
                // A shard that heard the last one late starts now, not in
                // the past.
                return Ok(Timestamp::from_micros(at).max(clock.now()));
            }
            if Instant::now() > deadline {
                let missing: Vec<String> = missing.iter().map(u32::to_string).collect();
                return Err(MeshError::Broker(format!(
                    "shards {} were not ready within {} s; expected every shard of the run started against the same broker with the same scenario, seed and --shard count",
                    missing.join(", "),
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// This shard's latest figures, for its next status (the board adds
    /// the run, the shard and the times).
    pub(crate) fn update(&self, mine: ShardStatus) {
        lock(&self.shared).mine = mine;
    }

    /// The whole run, as far as the status messages tell it.
    pub(crate) fn whole(&self, mine: &ShardStatus) -> WholeRun {
        lock(&self.shared).board.whole(mine)
    }

    /// What the part file records of the others' clocks.
    pub(crate) fn clock(&self) -> PartClock {
        lock(&self.shared).board.clock()
    }

    /// Says `last` once more and disconnects.
    pub(crate) async fn stop(self, last: ShardStatus) {
        self.update(last);
        lock(&self.shared).stopping = true;
        self.wake.notify_one();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            // Its broker is gone: nothing more to say.
        }
    }
}

async fn run_link(index: u32, rt: Arc<NodeRuntime>, shared: Arc<Mutex<Shared>>, wake: Arc<Notify>) {
    let mut generation = 0u32;
    let mut conn: Option<Connection> = None;
    let mut next_status = Instant::now();
    let topic = rt.topics.shard(index);
    loop {
        let stopping = lock(&shared).stopping;
        if conn.is_none() {
            if stopping {
                return;
            }
            let addr = crate::broker::address_for(&rt.broker, index as usize, generation);
            let options = ConnectOptions::new(rt.topics.shard_client_id(index, generation), 5);
            match Connection::connect(
                addr,
                rt.tls.as_ref(),
                &options,
                rt.connect_timeout,
                64 * 1024,
            )
            .await
            {
                Ok(mut c) => {
                    c.subscribe(&[(&rt.topics.shard_filter(), QoS::AtMostOnce)]);
                    conn = Some(c);
                    next_status = Instant::now();
                }
                Err(_) => {
                    generation += 1;
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = wake.notified() => {}
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        if stopping || Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_EVERY;
            let bytes = {
                let s = lock(&shared);
                s.board.status(s.mine.clone(), rt.clock.now().as_micros())
            };
            c.publish(&topic, &bytes, QoS::AtMostOnce);
        }
        if stopping {
            if let Some(c) = conn.take() {
                c.close_gracefully(Duration::from_millis(500)).await;
            }
            return;
        }
        tokio::select! {
            result = c.drive() => {
                let outcome = result.and_then(|()| {
                    while let Some(incoming) = c.next_incoming()? {
                        if let Incoming::Message { payload, .. } = incoming {
                            let now = rt.clock.now().as_micros();
                            lock(&shared).board.handle(&payload, now);
                        }
                    }
                    Ok(())
                });
                if outcome.is_err() {
                    conn = None;
                    generation += 1;
                }
            }
            () = tokio::time::sleep_until(next_status) => {}
            () = wake.notified() => {}
        }
    }
}
