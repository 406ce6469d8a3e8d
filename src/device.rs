//! Device strings (`cpu`, `cuda:N`) to candle devices, plus CPU allocator tuning.

use candle::Device;

use crate::{Error, Result};

/// Parses `cpu` or `cuda:N` without opening the device.
pub fn parse(s: &str) -> Result<DeviceSpec> {
    match s {
        "cpu" => Ok(DeviceSpec::Cpu),
        _ => {
            let idx = s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "unknown device `{s}`; expected `cpu` or `cuda:N`"
                    ))
                })?;
            Ok(DeviceSpec::Cuda(idx))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Opens the device; `cuda:N` needs a build with the `cuda` feature.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => {
                if !candle::utils::cuda_is_available() {
                    return Err(Error::invalid_input(format!(
                        "device cuda:{i} requested but this binary was built without the `cuda` feature"
                    )));
                }
                Ok(Device::new_cuda(i)?)
            }
        }
    }
}

/// Opens a device from its string form.
pub fn open(s: &str) -> Result<Device> {
    parse(s)?.open()
}

/// Opens `s` and says what it is: for the CPU the threads and memory, for a GPU its name,
/// compute capability and free / total memory. A device that cannot be opened is an error
/// naming it (never a fallback to the CPU).
pub fn describe(s: &str) -> Result<String> {
    let dev = open(s).map_err(|e| Error::invalid("device", format!("{s}: {e}")))?;
    match &dev {
        Device::Cpu => {
            let gib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemTotal:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                })
                .map_or_else(|| "?".into(), |kb| format!("{:.1}", kb / (1 << 20) as f64));
            Ok(format!(
                "cpu: {} threads, {gib} GiB RAM",
                rayon::current_num_threads()
            ))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let stream = d.cuda_stream();
            let ctx = stream.context();
            let err = |e: candle::cuda_backend::cudarc::driver::DriverError| {
                Error::invalid("device", format!("{s}: {e}"))
            };
            let name = ctx.name().map_err(err)?;
            let (major, minor) = ctx.compute_capability().map_err(err)?;
            let (free, total) = ctx.mem_get_info().map_err(err)?;
            Ok(format!(
                "{s}: {name}, compute capability {major}.{minor}, {:.1} of {:.1} GiB free",
                free as f64 / (1u64 << 30) as f64,
                total as f64 / (1u64 << 30) as f64
            ))
        }
        other => Ok(format!("{s}: {other:?}")),
    }
}

/// Keeps glibc from returning freed tensor buffers to the OS after every op: candle allocates a
/// fresh buffer per op and the page faults of re-mapping them cost 25–30 % of CPU training time.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before worker threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
