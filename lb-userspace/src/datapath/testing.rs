//! Running the program without an interface (BPF_PROG_TEST_RUN), for tests and benchmarks, and
//! the hooks only the benchmarks use.

use std::time::Duration;

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunOptions},
};

use crate::datapath::{Datapath, DatapathError, Result, map_err, no_map, prog_err};

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug)]
pub struct RunResult {
    pub verdict: u32,
    pub data: Vec<u8>,
    /// Average time per repetition, as the kernel measured it.
    pub duration: Duration,
}

impl Datapath {
    /// Benchmark only: reset the fresh-source counter and set its wrap (0 = never wraps).
    pub fn set_bench_wrap(&mut self, wrap: u32) -> Result<()> {
        use lb_common::{MAP_BENCH, bench_slot};
        let map = self.ebpf.map_mut(MAP_BENCH).ok_or(no_map(MAP_BENCH))?;
        let mut a: PerCpuArray<&mut MapData, u32> = PerCpuArray::try_from(map).map_err(map_err(MAP_BENCH))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io {
            what: "cannot count CPUs",
            path: "/sys/devices/system/cpu/possible".into(),
            source: e,
        })?;
        for (slot, value) in [(bench_slot::COUNTER, 0), (bench_slot::WRAP, wrap)] {
            let values = aya::maps::PerCpuValues::try_from(vec![value; cpus]).expect("nr_cpus values");
            a.set(slot, values, 0).map_err(map_err(MAP_BENCH))?;
        }
        Ok(())
    }

    /// Benchmark only: the e2e floor program's VIP and backend (`lb_common::FloorTarget`).
    pub fn set_floor_target(&mut self, target: lb_common::FloorTarget) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(lb_common::MAP_FLOOR_TARGET)
            .ok_or(no_map(lb_common::MAP_FLOOR_TARGET))?;
        let mut a: Array<&mut MapData, lb_common::FloorTarget> =
            Array::try_from(map).map_err(map_err(lb_common::MAP_FLOOR_TARGET))?;
        a.set(0, target, 0).map_err(map_err(lb_common::MAP_FLOOR_TARGET))
    }

    /// Benchmark only: the client's frame `PROG_BENCH_RESTORE` puts back before each
    /// repetition (at least `BENCH_FRAME_HEAD` bytes).
    pub fn set_bench_frame(&mut self, frame: &[u8]) -> Result<()> {
        use lb_common::{BENCH_FRAME_HEAD, BenchFrame, MAP_BENCH_FRAME};
        let map = self
            .ebpf
            .map_mut(MAP_BENCH_FRAME)
            .ok_or(no_map(MAP_BENCH_FRAME))?;
        let mut a: Array<&mut MapData, BenchFrame> =
            Array::try_from(map).map_err(map_err(MAP_BENCH_FRAME))?;
        let mut head = [0u8; BENCH_FRAME_HEAD];
        head.copy_from_slice(&frame[..BENCH_FRAME_HEAD]);
        let value = BenchFrame {
            len: frame.len() as u32,
            head,
            _pad: [0; 2],
        };
        a.set(0, value, 0).map_err(map_err(MAP_BENCH_FRAME))
    }

    /// Tests only: empty the encapsulation stage's slot (`MAP_ENCAP_STAGE`), as it is before
    /// a load fills it, so the main program's tail call fails.
    pub fn clear_encap_stage(&mut self) -> Result<()> {
        self.encap_stage
            .clear_index(&lb_common::ENCAP_STAGE_SLOT)
            .map_err(map_err(lb_common::MAP_ENCAP_STAGE))
    }

    /// Run program `prog` on `data` `repeat` times (the kernel feeds each repetition the
    /// previous one's output).
    pub fn test_run(&mut self, prog: &str, data: &[u8], repeat: u32) -> Result<RunResult> {
        self.test_run_on(prog, data, repeat, None)
    }

    /// As `test_run`, with the frame received on interface `ingress` (an index in the caller's
    /// network namespace) instead of the loopback: what the program's FIB lookups start from.
    pub fn test_run_on(
        &mut self,
        prog: &str,
        data: &[u8],
        repeat: u32,
        ingress: Option<u32>,
    ) -> Result<RunResult> {
        let p = self.program(prog)?;
        let mut out = vec![0u8; data.len() + 256];
        let mut opts = TestRunOptions::new();
        // `struct xdp_md`: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each); the kernel wants data_end = the frame's length.
        let ctx: Vec<u8> = [0, data.len() as u32, 0, ingress.unwrap_or(0), 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        if ingress.is_some() {
            opts.ctx_in = Some(&ctx);
        }
        opts.data_in = Some(data);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat.max(1);
        let r = p.test_run(opts).map_err(prog_err(prog))?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            verdict: r.return_value,
            data: out,
            duration: r.duration,
        })
    }
}
