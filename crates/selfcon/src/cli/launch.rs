//! `selfcon launch`: one process per device, like torchrun.

use std::ffi::OsString;
use std::time::Duration;

use clap::Args;
use selfcon::distributed::env::DEFAULT_MASTER_PORT;
use selfcon::distributed::launch::{launch, LaunchConfig};

use super::Failure;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    selfcon launch --nproc_per_node 4 -- pretrain --method SelfCon --batch_size 256 ...\n  \
    two machines, 8 GPUs each, on node 0 and node 1 (same command, --node_rank 0 / 1):\n  \
    selfcon launch --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr 10.0.0.1 -- pretrain ...\n\n\
    --batch_size is per process: the global batch is world size × --batch_size.")]
pub struct LaunchArgs {
    /// Processes on this machine (one per GPU; on CPU, any number).
    #[arg(long = "nproc_per_node", visible_alias = "nproc-per-node", default_value_t = 1, value_name = "N")]
    pub nproc_per_node: usize,

    /// Machines taking part; each runs this command with its own --node_rank.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub nnodes: usize,

    /// This machine's index, 0 … nnodes−1 (node 0 hosts rank 0 and the rendezvous store).
    #[arg(long = "node_rank", visible_alias = "node-rank", default_value_t = 0, value_name = "R")]
    pub node_rank: usize,

    /// Address of node 0, reachable from every machine.
    #[arg(long = "master_addr", visible_alias = "master-addr", default_value = "127.0.0.1", value_name = "ADDR")]
    pub master_addr: String,

    /// Free TCP port on node 0 for the rendezvous store.
    #[arg(long = "master_port", visible_alias = "master-port", default_value_t = DEFAULT_MASTER_PORT, value_name = "PORT")]
    pub master_port: u16,

    /// Seconds the other ranks get to stop by themselves (with an error naming the failed rank)
    /// after one rank failed; then they are killed.
    #[arg(long = "grace_period", visible_alias = "grace-period", default_value_t = 15, value_name = "SECONDS")]
    pub grace_period: u64,

    /// The command every rank runs: pretrain, linear or ce with its flags, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(a: LaunchArgs) -> Result<(), Failure> {
    let program = std::env::current_exe().map_err(|e| Failure {
        message: format!("launch: cannot find this executable: {e}"),
        exit_code: 1,
        agreed_stop: false,
    })?;
    let config = LaunchConfig {
        nproc_per_node: a.nproc_per_node,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr,
        master_port: a.master_port,
        grace: Duration::from_secs(a.grace_period),
        program,
        args: a.command,
    };
    launch(&config).map_err(|f| Failure {
        message: f.message,
        exit_code: f.exit_code.clamp(1, 255) as u8,
        agreed_stop: false,
    })
}
