//! Deterministic simulation: three clients and a model server on a virtual clock, with
//! seeded random delays, dropped connections, silently dead links, server crashes and
//! downtime, and app restarts (page reloads). Checked for every seed:
//! - every publication the server accepted reaches every subscriber exactly once, in
//!   per-channel order, with nothing missing (concrete and pattern subscriptions);
//! - every publish that became durable is stored by the server exactly once and acked;
//!   nothing stays queued and nothing fails.
//!
//! `TIDINGS_SIM_SEEDS=N` runs N seeds (default 150); `TIDINGS_SIM_SEED=S` runs one.

mod support;

use std::collections::BTreeMap;

use support::World;
use tidings::Options;

const CHANNELS: [&str; 2] = ["room-a", "room-b"];

fn options() -> Options {
    let mut options = Options::default();
    options.reconnect.max_attempts = None;
    options
}

fn run_scenario(seed: u64) -> Result<World, String> {
    let mut world = World::new(seed);
    world.add_client(options(), &["room-*"]);
    world.add_client(options(), &CHANNELS);
    world.add_client(options(), &CHANNELS);
    world.run_until(2_000);

    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut t = 2_000;
    let mut n = 0;
    // A late joiner subscribes fresh while messages flow: nothing published after its
    // subscription registered may be lost, even if it races the subscribe reply.
    let late_join_at = rng.u64(20_000..120_000);
    let mut clients = 3;
    while t < 240_000 {
        t += rng.u64(20..1_500);
        world.run_until(t);
        if clients == 3 && t >= late_join_at {
            world.add_client(options(), &CHANNELS);
            clients = 4;
        }
        let who = rng.usize(0..clients);
        match rng.u32(0..100) {
            0..=64 => {
                n += 1;
                world.publish(who, CHANNELS[rng.usize(0..2)], n);
            }
            65..=72 => world.cut(who),
            73..=75 => world.blackhole(who),
            76..=77 => {
                world.restart_server(None);
                world.server.up = false;
                t += rng.u64(0..8_000);
                world.run_until(t);
                world.server_back_up();
            }
            78..=79 => world.start_client(who),
            _ => {}
        }
    }
    world.server_back_up();
    world.run_until(t + 400_000);
    check(&world).map(|()| world)
}

fn check(world: &World) -> Result<(), String> {
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (channel, log) in &world.server.channels {
        expected.insert(
            channel.clone(),
            log.publications.iter().map(|p| p.offset).collect(),
        );
        let top = log.publications.len() as u64;
        let contiguous: Vec<u64> = (1..=top).collect();
        if expected[channel] != contiguous {
            return Err(format!("server history of {channel} is not contiguous"));
        }
    }
    for (index, client) in world.clients.iter().enumerate() {
        for channel in CHANNELS {
            let mut want = expected.get(channel).cloned().unwrap_or_default();
            if index == 3 {
                let from = world
                    .server
                    .first_registration_top
                    .get(&(3, channel.to_string()))
                    .copied()
                    .ok_or("late joiner never registered")?;
                want.retain(|offset| *offset > from);
            }
            let got = client.received.get(channel).cloned().unwrap_or_default();
            if got != want {
                let dupes = got.len() as i64 - {
                    let mut g = got.clone();
                    g.dedup();
                    g.len() as i64
                };
                return Err(format!(
                    "client {index} {channel}: got {} publications ({} duplicates), want {}; first difference at {:?}",
                    got.len(),
                    dupes,
                    want.len(),
                    got.iter().zip(&want).position(|(a, b)| a != b)
                ));
            }
        }
        if client.needs_reload != 0 {
            return Err(format!(
                "client {index} was told to reload although history was durable"
            ));
        }
        if !client.failed.is_empty() {
            return Err(format!(
                "client {index}: messages failed: {:?}",
                client.failed
            ));
        }
        let pending = client.client.outbox();
        if !pending.is_empty() {
            return Err(format!(
                "client {index}: {} messages still queued ({:?})",
                pending.len(),
                client.client.state()
            ));
        }
        for msg_id in &client.durable {
            let copies: usize = world
                .server
                .channels
                .values()
                .map(|log| log.publications.iter().filter(|p| &p.id == msg_id).count())
                .sum();
            if copies != 1 {
                return Err(format!(
                    "client {index}: durable message {msg_id} stored {copies} times"
                ));
            }
            if !client.acked.contains(msg_id) {
                return Err(format!(
                    "client {index}: durable message {msg_id} never acked"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_accepted_message_is_delivered_exactly_once_under_faults() {
    let seeds: Vec<u64> = match std::env::var("TIDINGS_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("TIDINGS_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("TIDINGS_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(150);
            (1..=count).collect()
        }
    };
    let mut published = 0;
    let mut failures = Vec::new();
    for seed in &seeds {
        match run_scenario(*seed) {
            Ok(world) => {
                published += world.clients.iter().map(|c| c.durable.len()).sum::<usize>();
            }
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    assert!(
        published > seeds.len() * 50,
        "the scenario must actually publish ({published})"
    );
}

#[test]
fn simulation_is_deterministic() {
    let a = run_scenario(42).expect("seed 42 passes");
    let b = run_scenario(42).expect("seed 42 passes");
    assert_eq!(a.clients[1].received, b.clients[1].received);
    assert_eq!(a.clients[0].events, b.clients[0].events);
}

#[test]
fn restart_without_durable_history_tells_apps_to_reload() {
    let mut world = World::new(7);
    world.add_client(options(), &["room-a"]);
    world.add_client(options(), &["room-*"]);
    world.run_until(1_000);
    for n in 0..5 {
        world.publish(0, "room-a", n);
    }
    world.run_until(3_000);
    assert_eq!(world.clients[0].received["room-a"], vec![1, 2, 3, 4, 5]);
    assert_eq!(world.clients[1].received["room-a"], vec![1, 2, 3, 4, 5]);

    world.restart_server(Some("epoch-2"));
    world.run_until(60_000);
    assert_eq!(
        world.clients[0].needs_reload, 1,
        "concrete subscription must ask for a reload"
    );
    assert_eq!(
        world.clients[1].needs_reload, 1,
        "pattern subscription must ask for a reload"
    );

    // New offsets restart at 1 in the new epoch and are delivered, once each.
    world.publish(0, "room-a", 100);
    world.run_until(62_000);
    assert_eq!(world.clients[0].received["room-a"], vec![1, 2, 3, 4, 5, 1]);
    assert_eq!(world.clients[1].received["room-a"], vec![1, 2, 3, 4, 5, 1]);
}
