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
                    Error::InvalidArgument(format!(
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
                    return Err(Error::InvalidArgument(format!(
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
