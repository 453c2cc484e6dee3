//! Where this process sits in a distributed run, read from the environment that `selfcon launch`,
//! torchrun and SLURM set: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`
//! (SLURM: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, with `MASTER_ADDR` exported by the
//! job script).

use crate::error::{Error, Result};

/// The default rendezvous port, as torchrun's.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine: picks the GPU.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl RankEnv {
    /// `None` when the process was not started as part of a distributed run.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`RankEnv::from_env`] over any variable lookup (tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        Error::input(format!("environment variable {name}='{v}' is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let (rank, world_size, local_rank, via) = match (number("RANK")?, number("WORLD_SIZE")?) {
            (Some(rank), Some(world)) => (rank, world, number("LOCAL_RANK")?.unwrap_or(rank), "RANK/WORLD_SIZE"),
            (None, None) => match (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
                (Some(rank), Some(world)) if world > 1 => {
                    (rank, world, number("SLURM_LOCALID")?.unwrap_or(0), "SLURM_PROCID/SLURM_NTASKS")
                }
                _ => return Ok(None),
            },
            (Some(_), None) => return Err(Error::input("environment variable RANK is set but WORLD_SIZE is not")),
            (None, Some(_)) => return Err(Error::input("environment variable WORLD_SIZE is set but RANK is not")),
        };
        if world_size == 0 {
            return Err(Error::input("environment variable WORLD_SIZE must be at least 1"));
        }
        if rank >= world_size {
            return Err(Error::input(format!("rank {rank} is not below the world size {world_size} ({via})")));
        }
        let master_addr = var("MASTER_ADDR").filter(|a| !a.trim().is_empty()).ok_or_else(|| {
            Error::input(format!(
                "environment variable MASTER_ADDR is not set ({via} are): the address of rank 0's machine{}",
                if via.starts_with("SLURM") {
                    " (e.g. export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1))"
                } else {
                    ""
                }
            ))
        })?;
        let master_port = match var("MASTER_PORT") {
            None => DEFAULT_MASTER_PORT,
            Some(p) => p.trim().parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                Error::input(format!("environment variable MASTER_PORT='{p}' is not a port number (1-65535)"))
            })?,
        };
        Ok(Some(RankEnv { rank, world_size, local_rank, master_addr: master_addr.trim().to_string(), master_port }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<RankEnv>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RankEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            e,
            RankEnv { rank: 3, world_size: 4, local_rank: 1, master_addr: "node0".into(), master_port: 1234 }
        );
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let msg = |pairs| env(pairs).unwrap_err().to_string();
        assert!(msg(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK='x'"));
        assert!(msg(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")]).contains("rank 2 is not below"));
        assert!(msg(&[("RANK", "0"), ("WORLD_SIZE", "2")]).contains("MASTER_ADDR"));
        assert!(msg(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "0")])
            .contains("MASTER_PORT"));
        assert!(msg(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2")]).contains("scontrol"));
        assert!(msg(&[("WORLD_SIZE", "2")]).contains("RANK is not"));
    }
}
