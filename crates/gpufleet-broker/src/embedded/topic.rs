//! One topic: its directory, log (view + writer), consumer groups and counters; creating and
//! recovering it on disk, reading messages back, reclaiming fully acked segments, and its stats.
//!
//! Layout: `<data_dir>/<topic>/{base:020}.seg` and `<data_dir>/<topic>/groups/<group>.acks`.

use super::{
    ackfile::AckFile,
    acks::AckSet,
    group::{Group, GroupState, Limits},
    log::{LogView, LogWriter, ReadPlan},
    segment::{self, io_err, sync_dir, SegmentFile, SegmentView},
};
use crate::{BrokerError, GroupStats, TopicStats};
use bytes::Bytes;
use gpufleet_core::{GroupName, TopicName};
use parking_lot::{Mutex, RwLock};
use std::{
    collections::{BTreeMap, VecDeque},
    fs,
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, Arc},
};
use tokio::{sync::Notify, time::Instant};
use tracing::{debug, warn};

/// One fetch hands out new messages worth about this many bytes of log at most (plus one message),
/// whatever its `max`, so a large `max` on a deep backlog cannot load the backlog into memory.
pub(crate) const MAX_FETCH_BYTES: u64 = 64 << 20;

/// Log settings taken from the broker config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogSettings {
    pub(crate) segment_bytes: u64,
    /// False under `FsyncPolicy::Never`.
    pub(crate) keep_unsynced: bool,
}

/// A topic of the embedded broker.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: TopicName,
    dir: PathBuf,
    pub(crate) view: RwLock<LogView>,
    /// Used by the writer thread only.
    pub(crate) writer: Mutex<LogWriter>,
    pub(crate) groups: RwLock<BTreeMap<GroupName, Arc<Group>>>,
    /// Woken when messages become visible or a nack makes one due.
    pub(crate) notify: Notify,
    /// Messages published since open.
    pub(crate) published: AtomicU64,
}

fn groups_dir(dir: &Path) -> PathBuf {
    dir.join("groups")
}

fn group_path(dir: &Path, group: &GroupName) -> PathBuf {
    groups_dir(dir).join(format!("{group}.acks"))
}

impl Topic {
    /// Creates the directory and first segment of a new topic.
    pub(crate) fn create(
        data_dir: &Path,
        name: TopicName,
        settings: LogSettings,
    ) -> Result<Self, BrokerError> {
        let dir = data_dir.join(name.as_str());
        fs::create_dir_all(groups_dir(&dir)).map_err(io_err(&dir))?;
        let seg = SegmentFile::create(&dir, 0)?;
        seg.sync()?;
        sync_dir(&dir)?;
        sync_dir(data_dir)?;
        Self::assemble(
            name,
            dir,
            VecDeque::from([SegmentView::empty(Arc::new(seg))]),
            Vec::new(),
            settings,
        )
    }

    /// Opens an existing topic directory: replays ack files, deletes segments every group has
    /// acked, verifies the other segments (truncating a torn tail of the last one) and rewrites
    /// each ack file as a snapshot consistent with the log.
    pub(crate) fn recover(
        dir: PathBuf,
        name: TopicName,
        settings: LogSettings,
    ) -> Result<Self, BrokerError> {
        fs::create_dir_all(groups_dir(&dir)).map_err(io_err(&dir))?;
        let mut bases = Vec::new();
        for file_name in list_dir(&dir)? {
            if file_name.ends_with(".tmp") {
                remove_leftover(&dir.join(&file_name));
            } else if let Some(base) = segment::parse_segment_name(&file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut loaded = Vec::new();
        for file_name in list_dir(&groups_dir(&dir))? {
            let path = groups_dir(&dir).join(&file_name);
            if file_name.ends_with(".tmp") {
                remove_leftover(&path);
            } else if let Some(group) = file_name
                .strip_suffix(".acks")
                .filter(|g| super::valid_name(g))
            {
                loaded.push((GroupName::new(group), AckFile::load(&path)?));
            }
        }
        if bases.is_empty() {
            // Only when someone removed the segment files: start after every offset ever acked so
            // that new messages are not taken for acked ones.
            let base = loaded
                .iter()
                .map(|(_, a)| a.ranges().last().map_or(a.watermark(), |r| r.1))
                .max()
                .unwrap_or(0);
            SegmentFile::create(&dir, base)?.sync()?;
            sync_dir(&dir)?;
            bases.push(base);
        }
        if let Some(min_acked) = loaded.iter().map(|(_, a)| a.watermark()).min() {
            while bases.len() > 1 && bases[1] <= min_acked {
                let path = segment::segment_path(&dir, bases.remove(0));
                fs::remove_file(&path).map_err(io_err(&path))?;
                debug!(path = %path.display(), "deleted a segment every group had acked");
            }
        }
        let mut segments = VecDeque::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::segment_path(&dir, base);
            if let Some(prev) = segments.back().map(SegmentView::end_offset) {
                if prev != base {
                    let why =
                        format!("segment starts at offset {base}, the previous one ends at {prev}");
                    return Err(super::record::corrupt(&path, 0, &why));
                }
            }
            segments.push_back(segment::recover(
                SegmentFile::open(path, base)?,
                i + 1 == bases.len(),
            )?);
        }
        let (first, end) = (
            bases[0],
            segments.back().map_or(bases[0], SegmentView::end_offset),
        );
        let mut groups = Vec::with_capacity(loaded.len());
        for (group, mut acks) in loaded {
            if acks.truncate(end) {
                warn!(topic = %name, %group, end, "forgetting acks of messages the log lost in a crash");
            }
            acks.raise_watermark(first);
            let file = AckFile::create(group_path(&dir, &group), &acks)?;
            groups.push(Group {
                name: group,
                state: Mutex::new(GroupState::new(acks)),
                file: Mutex::new(file),
            });
        }
        Self::assemble(name, dir, segments, groups, settings)
    }

    fn assemble(
        name: TopicName,
        dir: PathBuf,
        segments: VecDeque<SegmentView>,
        groups: Vec<Group>,
        settings: LogSettings,
    ) -> Result<Self, BrokerError> {
        let view = LogView { segments };
        let writer = LogWriter::new(
            dir.clone(),
            settings.segment_bytes,
            settings.keep_unsynced,
            &view,
        )?;
        Ok(Self {
            name,
            writer: Mutex::new(writer),
            dir,
            view: RwLock::new(view),
            groups: RwLock::new(
                groups
                    .into_iter()
                    .map(|g| (g.name.clone(), Arc::new(g)))
                    .collect(),
            ),
            notify: Notify::new(),
            published: AtomicU64::new(0),
        })
    }

    /// Creates a consumer group starting at the oldest retained message (writer thread only).
    pub(crate) fn create_group(&self, name: &GroupName) -> Result<(), BrokerError> {
        if self.groups.read().contains_key(name) {
            return Ok(());
        }
        let acks = AckSet::new(self.view.read().first());
        let file = AckFile::create(group_path(&self.dir, name), &acks)?;
        let group = Group {
            name: name.clone(),
            state: Mutex::new(GroupState::new(acks)),
            file: Mutex::new(file),
        };
        self.groups.write().insert(name.clone(), Arc::new(group));
        Ok(())
    }

    /// A consumer group, if it exists.
    pub(crate) fn group(&self, name: &GroupName) -> Option<Arc<Group>> {
        self.groups.read().get(name).cloned()
    }

    /// `(oldest retained offset, next offset)` as readers see them.
    pub(crate) fn bounds(&self) -> (u64, u64) {
        let view = self.view.read();
        (view.first(), view.end())
    }

    /// How far new messages from `from` may be handed out in one fetch: about
    /// [`MAX_FETCH_BYTES`] of log.
    pub(crate) fn fetch_limit(&self, from: u64) -> u64 {
        self.view.read().read_limit(from, MAX_FETCH_BYTES)
    }

    /// The reads that return `offsets` (retained, visible) in the given order.
    pub(crate) fn plan(&self, offsets: &[u64]) -> Vec<ReadPlan> {
        let mut plans = Vec::new();
        let view = self.view.read();
        let mut i = 0;
        while i < offsets.len() {
            let mut j = i + 1;
            while j < offsets.len() && offsets[j] == offsets[j - 1] + 1 {
                j += 1;
            }
            view.plan(offsets[i], offsets[j - 1] + 1, &mut plans);
            i = j;
        }
        plans
    }

    /// Deletes segments (never the newest) that every group has acked. No groups: keeps all.
    pub(crate) fn reclaim(&self) {
        let min_acked = self
            .groups
            .read()
            .values()
            .map(|g| g.state.lock().acks.watermark())
            .min();
        let Some(min_acked) = min_acked else { return };
        let mut doomed = Vec::new();
        {
            let mut view = self.view.write();
            while view.segments.len() > 1 && view.segments[0].end_offset() <= min_acked {
                doomed.extend(view.segments.pop_front().map(|s| s.seg));
            }
        }
        for seg in doomed {
            // Readers holding the file keep reading it: an unlinked file lives until closed.
            match fs::remove_file(&seg.path) {
                Ok(()) => {
                    debug!(topic = %self.name, path = %seg.path.display(), "reclaimed a fully acked segment")
                }
                Err(error) => {
                    warn!(topic = %self.name, path = %seg.path.display(), %error, "cannot delete a segment")
                }
            }
        }
    }

    /// Counters of this topic; `dead_letters` is the depth of its dead-letter topic.
    pub(crate) fn stats(&self, now: Instant, limits: Limits, dead_letters: u64) -> TopicStats {
        let (first, end, bytes) = {
            let view = self.view.read();
            (view.first(), view.end(), view.bytes())
        };
        let groups: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        let mut retained_by_all = vec![(first, end)];
        let mut stats: Vec<GroupStats> = Vec::with_capacity(groups.len());
        for group in &groups {
            let mut state = group.state.lock();
            stats.push(state.stats(&group.name, now, end, limits));
            retained_by_all = state.acks.intersect(&retained_by_all);
        }
        let acked_by_all: u64 = if groups.is_empty() {
            0
        } else {
            retained_by_all.iter().map(|(s, e)| e - s).sum()
        };
        TopicStats {
            topic: self.name.clone(),
            depth: (end - first) - acked_by_all,
            published: self.published.load(std::sync::atomic::Ordering::Relaxed),
            bytes,
            dead_letters,
            groups: stats,
        }
    }
}

/// Reads the planned records; payloads come back in plan order.
pub(crate) fn read_plans(plans: &[ReadPlan]) -> Result<Vec<(u64, Bytes)>, BrokerError> {
    let mut out = Vec::with_capacity(
        plans
            .iter()
            .map(|p| (p.offsets.1 - p.offsets.0) as usize)
            .sum(),
    );
    for plan in plans {
        segment::read_records(&plan.seg, plan.bytes, plan.offsets, &mut out)?;
    }
    Ok(out)
}

fn list_dir(dir: &Path) -> Result<Vec<String>, BrokerError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

fn remove_leftover(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        warn!(path = %path.display(), %error, "cannot remove a leftover temporary file");
    }
}
