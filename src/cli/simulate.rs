//! `perfpilot simulate`: perfpilot against an HPA-style reactive policy and static peak
//! provisioning, in a closed loop without Kafka.

use crate::config::Config;
use crate::simulate::{print_table, Comparison};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Days of load to simulate (one step per minute).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Seed of the load traces (bursts, noise); the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// perfpilot's configuration (default: the built-in one shown by --show-config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the built-in configuration and exit.
    #[arg(long)]
    show_config: bool,
    /// Cost of one replica for one hour, for the cost column.
    #[arg(long, default_value_t = 1.0)]
    cost_per_replica_hour: f64,
}

pub(super) fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if args.show_config {
        print!("{}", crate::simulate::SIM_CONFIG.trim_start());
        return Ok(ExitCode::SUCCESS);
    }
    if args.days == 0 {
        anyhow::bail!("--days must be at least 1");
    }
    let config = args
        .config
        .as_deref()
        .map(|p| Config::load(Some(p)))
        .transpose()?;
    let started = std::time::Instant::now();
    let outcomes = Comparison::new(args.days, args.seed, config)?.run()?;
    println!(
        "{} days, 3 services (web: daily cycle and bursts; api: growth and short bursts; worker: weekly pattern and long bursts), one step per minute, seed {}",
        args.days, args.seed
    );
    println!();
    print_table(
        &outcomes,
        args.cost_per_replica_hour,
        &mut std::io::stdout(),
    )?;
    println!();
    for o in &outcomes {
        let per: Vec<String> = o
            .per_service
            .iter()
            .map(|(s, m)| format!("{s} {m}"))
            .collect();
        println!(
            "{}: SLO-violation minutes by service: {}",
            o.policy,
            if per.is_empty() {
                "none".to_string()
            } else {
                per.join(", ")
            }
        );
        for note in &o.notes {
            println!("{}: {note}", o.policy);
        }
    }
    println!(
        "\nSLO: p99 latency above 4× its unloaded value; slack: provisioned − used replicas, averaged over service-minutes; cost: replica-hours × {}; flip-flop: a change reversing the previous one within 15 min. Simulated in {:.1} s.",
        args.cost_per_replica_hour,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
