//! GPUs through NVML (`nvml-wrapper`, which loads `libnvidia-ml.so.1` at run time, so the agent
//! runs on hosts without a driver).
//!
//! NVML is initialised once per process ([`GpuProbe::load`]); without the library the probe reports
//! [`GpuDriver::Absent`] and the health component says [`NO_DRIVER_MESSAGE`] with status `ok` (a
//! CPU host is not broken). Critical XID errors arrive as NVML events: the probe registers every
//! GPU for `CRITICAL_XID_ERROR` and drains the event set without waiting at each sample, so
//! [`GpuState::xid_errors`] counts the XIDs seen since the agent started.
//!
//! Every call here blocks (NVML is synchronous); callers run [`GpuProbe::sample`] on a blocking
//! thread.

use crate::wire::{ComponentKind, GpuDriver, GpuProcess, GpuState, ProbeError};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `gpu` component's message on a host without the NVIDIA driver.
pub const NO_DRIVER_MESSAGE: &str = "no NVIDIA driver (libnvidia-ml.so not found)";

/// The process-wide NVML handle, or why there is none.
static NVML: OnceLock<Result<Nvml, GpuDriver>> = OnceLock::new();

fn nvml() -> Result<&'static Nvml, GpuDriver> {
    NVML.get_or_init(|| match Nvml::init() {
        Ok(n) => Ok(n),
        Err(NvmlError::LibloadingError(_)) => Err(GpuDriver::Absent),
        Err(e) => Err(GpuDriver::Failed { error: e.to_string() }),
    })
    .as_ref()
    .map_err(Clone::clone)
}

#[derive(Default)]
struct XidCount {
    count: u64,
    last: Option<u64>,
}

/// Reads every GPU of the host.
pub struct GpuProbe {
    nvml: Option<&'static Nvml>,
    driver: GpuDriver,
    events: Option<EventSet<'static>>,
    xids: HashMap<String, XidCount>,
    proc_root: PathBuf,
}

impl std::fmt::Debug for GpuProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuProbe").field("driver", &self.driver).field("xid_events", &self.events.is_some()).finish()
    }
}

impl GpuProbe {
    /// Loads NVML (once per process) and registers for XID events. `proc_root` is where process
    /// names are read (`<proc_root>/<pid>/comm`).
    pub fn load(proc_root: &Path) -> Self {
        let proc_root = proc_root.to_path_buf();
        let nvml = match nvml() {
            Ok(n) => n,
            Err(driver) => return Self { nvml: None, driver, events: None, xids: HashMap::new(), proc_root },
        };
        let driver = match nvml.sys_driver_version() {
            Ok(v) => GpuDriver::Loaded { driver_version: v },
            Err(e) => GpuDriver::Failed { error: e.to_string() },
        };
        let events = register_xid_events(nvml);
        Self { nvml: Some(nvml), driver, events, xids: HashMap::new(), proc_root }
    }

    /// Whether a driver was found.
    pub fn driver(&self) -> &GpuDriver {
        &self.driver
    }

    /// Reads all GPUs. A GPU that cannot be read at all is left out and reported as a probe error;
    /// an unsupported reading is `None`.
    pub fn sample(&mut self) -> (Vec<GpuState>, Vec<ProbeError>) {
        let Some(nvml) = self.nvml else { return (Vec::new(), Vec::new()) };
        let mut errors = Vec::new();
        self.drain_xid_events(&mut errors);
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => return (Vec::new(), vec![probe_error("nvmlDeviceGetCount", e)]),
        };
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            match self.read_device(nvml, index) {
                Ok(g) => gpus.push(g),
                Err(e) => errors.push(probe_error(&format!("GPU {index}"), e)),
            }
        }
        (gpus, errors)
    }

    fn read_device(&self, nvml: &Nvml, index: u32) -> Result<GpuState, NvmlError> {
        let d = nvml.device_by_index(index)?;
        let uuid = d.uuid()?;
        let util = d.utilization_rates().ok();
        let mem = d.memory_info().ok();
        let xid = self.xids.get(&uuid);
        let processes = d
            .running_compute_processes()
            .unwrap_or_default()
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                name: process_name(&self.proc_root, p.pid),
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect();
        Ok(GpuState {
            index,
            name: d.name().unwrap_or_default(),
            util_percent: util.as_ref().map(|u| f64::from(u.gpu)),
            mem_util_percent: util.as_ref().map(|u| f64::from(u.memory)),
            memory_used_bytes: mem.as_ref().map(|m| m.used),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            power_limit_w: d.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0),
            sm_clock_mhz: d.clock_info(Clock::SM).ok(),
            mem_clock_mhz: d.clock_info(Clock::Memory).ok(),
            xid_errors: xid.map_or(0, |x| x.count),
            last_xid: xid.and_then(|x| x.last),
            processes,
            uuid,
        })
    }

    /// Takes every pending XID event without waiting (bounded, so a storm cannot stall sampling).
    fn drain_xid_events(&mut self, errors: &mut Vec<ProbeError>) {
        let Some(set) = &self.events else { return };
        for _ in 0..1024 {
            match set.wait(0) {
                Ok(ev) => {
                    let uuid = ev.device.uuid().unwrap_or_default();
                    let x = self.xids.entry(uuid).or_default();
                    x.count += 1;
                    x.last = match ev.event_data {
                        Some(XidError::Value(v)) => Some(v),
                        _ => x.last,
                    };
                }
                Err(NvmlError::Timeout) => return,
                Err(e) => {
                    errors.push(probe_error("nvmlEventSetWait", e));
                    return;
                }
            }
        }
    }
}

fn register_xid_events(nvml: &'static Nvml) -> Option<EventSet<'static>> {
    use nvml_wrapper::bitmasks::event::EventTypes;
    let mut set = nvml.create_event_set().ok()?;
    let count = nvml.device_count().ok()?;
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else { continue };
        // A GPU without event support gives the set back released; start a new one then.
        set = match d.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => s,
            Err(_) => nvml.create_event_set().ok()?,
        };
    }
    Some(set)
}

fn probe_error(source: &str, e: NvmlError) -> ProbeError {
    ProbeError { kind: ComponentKind::Gpu, source: format!("NVML {source}"), error: e.to_string() }
}

fn process_name(proc_root: &Path, pid: u32) -> String {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm")).map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no NVIDIA driver: the probe must say so and read nothing.
    #[test]
    fn no_driver_is_absent_and_samples_nothing() {
        if Path::new("/proc/driver/nvidia").exists() {
            eprintln!("NVIDIA driver present: the no-driver path cannot be observed on this host");
            return;
        }
        let mut p = GpuProbe::load(Path::new("/proc"));
        assert_eq!(p.driver(), &GpuDriver::Absent);
        let (gpus, errors) = p.sample();
        assert!(gpus.is_empty() && errors.is_empty());
        let c = crate::health::gpu_driver_component(p.driver());
        assert_eq!(c.status, crate::wire::Status::Ok);
        assert_eq!(c.message, NO_DRIVER_MESSAGE);
    }
}
