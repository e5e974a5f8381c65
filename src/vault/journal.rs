//! An append-only journal of sealed records that come and go (pending
//! flows), one file for all of them.
//!
//! A file per record cost a new inode for every write (the temporary file,
//! then the unlinked one it replaced) and an `fsync`: under a thousand
//! connects at once that was a third of the bot's CPU, most of it ext4
//! looking for a free inode past the many just deleted. Here a write is
//! an append that reaches the kernel before [`Journal::put`] returns, so
//! the process may die at any moment and lose nothing; a thread of the
//! journal's own syncs it to the disk within [`SYNC_EVERY`]. Only a crash
//! of the machine itself can lose the last second's records: pending flows
//! live minutes, and their owners would connect again. (Tokens, which live
//! for months, are synced at every write, in their own files.)
//!
//! A frame is `P`, the record's 32-byte name, a little-endian `u32`
//! length and the sealed bytes (already encrypted by the vault: the
//! journal never sees plaintext), or `D` and the name, for a removal. A
//! frame cut short by a crash ends the journal there. The file is
//! compacted (live records only, written aside and renamed over) when it
//! opens and whenever its dead frames outnumber the live ones, and the
//! file it replaces is shredded.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::VaultError;
use super::file;

const MAGIC: &[u8] = b"mcpgram journal 1\n";
/// The largest record accepted when reading (a sealed pending flow is
/// about 2 KB).
const MAX_RECORD: usize = 1 << 20;
/// Dead frames tolerated before compacting, beyond as many as live ones.
const SLACK: usize = 1024;
/// How long an append may wait in the kernel's cache before it is synced.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A record's name: 32 bytes (a SHA-256).
pub type Name = [u8; 32];

/// Live records as read back, sealed, in the order they were written.
pub type Records = Vec<(Name, Vec<u8>)>;

enum Frame {
    Put { name: Name, sealed: Vec<u8> },
    Remove { name: Name },
}

/// The writing end of a journal. Dropping it syncs what is left.
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    file: File,
    /// Names with a live record.
    live: HashSet<Name>,
    /// Frames in the file.
    frames: usize,
    /// Appended since the last sync.
    dirty: bool,
    /// The length of the file's whole frames.
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, compacts it, and answers
    /// the live records in the order they were written.
    pub fn open(path: &Path) -> Result<(Self, Records), VaultError> {
        if let Some(dir) = path.parent() {
            file::create_private_dir(dir)?;
        }
        let read = match fs::read(path) {
            Ok(bytes) => replay(&bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Replayed::default(),
            Err(source) => return Err(io("read", path, source)),
        };
        let live = read.live;
        // A start after a clean stop finds nothing to drop: no rewrite.
        let file = if read.whole && read.frames == live.len() {
            OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|source| io("open", path, source))?
        } else {
            compact(path, &live)?
        };
        let len = file
            .metadata()
            .map_err(|source| io("stat", path, source))?
            .len();
        let inner = Arc::new(Mutex::new(Inner {
            len,
            path: path.to_owned(),
            file,
            live: live.iter().map(|(name, _)| *name).collect(),
            frames: live.len(),
            dirty: false,
        }));
        let syncing = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("vault-journal".to_owned())
            .spawn(move || sync_while_open(syncing))
            .map_err(|source| io("start a syncer for", path, source))?;
        Ok((Self { inner }, live))
    }

    /// Appends a record, replacing any earlier one of the same name.
    pub async fn put(&self, name: Name, sealed: Vec<u8>) -> Result<(), VaultError> {
        self.append(Frame::Put { name, sealed })
    }

    /// Appends a record's removal; nothing when no record has the name.
    pub async fn remove(&self, name: Name) -> Result<(), VaultError> {
        self.append(Frame::Remove { name })
    }

    fn append(&self, frame: Frame) -> Result<(), VaultError> {
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        if let Frame::Remove { name } = &frame
            && !inner.live.contains(name)
        {
            return Ok(());
        }
        if let Err(source) = inner.file.write_all(&bytes) {
            // A frame written in part (the disk full) would end the
            // journal there at the next start, hiding every later one:
            // cut it off.
            if let Ok(end) = inner.file.metadata().map(|m| m.len())
                && let Err(error) = inner.file.set_len(end.min(inner.len))
            {
                tracing::error!(path = %inner.path.display(), %error, "could not cut a broken append off the journal");
            }
            return Err(io("append to", &inner.path, source));
        }
        inner.len += bytes.len() as u64;
        inner.dirty = true;
        inner.frames += 1;
        match frame {
            Frame::Put { name, .. } => inner.live.insert(name),
            Frame::Remove { name } => inner.live.remove(&name),
        };
        if inner.frames > 2 * inner.live.len() + SLACK {
            inner.compact();
        }
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.dirty
            && let Err(error) = inner.file.sync_data()
        {
            tracing::warn!(path = %inner.path.display(), %error, "could not sync the journal");
        }
    }
}

/// Syncs the journal each [`SYNC_EVERY`] it was written to, until it is
/// dropped. The sync runs outside the lock: appends go on meanwhile.
fn sync_while_open(journal: Weak<Mutex<Inner>>) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        let Some(inner) = journal.upgrade() else {
            return;
        };
        let file = {
            let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
            if !inner.dirty {
                continue;
            }
            inner.dirty = false;
            inner.file.try_clone()
        };
        drop(inner);
        if let Err(error) = file.and_then(|file| file.sync_data()) {
            tracing::warn!(%error, "could not sync the journal");
        }
    }
}

impl Inner {
    /// Rewrites the file with its live records; on failure the journal
    /// goes on appending to the old file, which is still whole.
    fn compact(&mut self) {
        let live = match fs::read(&self.path) {
            Ok(bytes) => replay(&bytes).live,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "could not read the journal to compact it");
                return;
            }
        };
        match compact(&self.path, &live) {
            Ok(file) => {
                self.len = file.metadata().map(|m| m.len()).unwrap_or(self.len);
                self.file = file;
                self.frames = live.len();
                self.dirty = false;
            }
            Err(error) => {
                tracing::warn!(error = %crate::logging::chain(&error), "could not compact the journal")
            }
        }
    }
}

fn encode(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Put { name, sealed } => {
            out.push(b'P');
            out.extend_from_slice(name);
            out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
            out.extend_from_slice(sealed);
        }
        Frame::Remove { name } => {
            out.push(b'D');
            out.extend_from_slice(name);
        }
    }
}

/// What a journal's bytes hold.
#[derive(Default)]
struct Replayed {
    /// The live records, in the order they were last written.
    live: Records,
    /// Frames read, live or not.
    frames: usize,
    /// The bytes are a journal to their end (no broken frame).
    whole: bool,
}

/// Reads a journal's bytes, stopping at the first frame that is cut short
/// or not a frame at all.
fn replay(bytes: &[u8]) -> Replayed {
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        if !bytes.is_empty() {
            tracing::warn!("the journal does not start as one; its records are dropped");
        }
        return Replayed::default();
    };
    let mut frames = 0;
    let mut records: HashMap<Name, (usize, Vec<u8>)> = HashMap::new();
    let mut order = 0;
    let take = |n: usize, rest: &mut &[u8]| -> Option<Vec<u8>> {
        let (head, tail) = (rest.len() >= n).then(|| rest.split_at(n))?;
        *rest = tail;
        Some(head.to_vec())
    };
    // Every way out of the loop but the end of the bytes is a broken frame.
    let mut whole = true;
    while let Some(kind) = take(1, &mut rest) {
        let Some(name) = take(32, &mut rest).and_then(|n| Name::try_from(n).ok()) else {
            whole = false;
            break;
        };
        match kind[0] {
            b'P' => {
                let Some(len) = take(4, &mut rest)
                    .and_then(|l| <[u8; 4]>::try_from(l).ok())
                    .map(|l| u32::from_le_bytes(l) as usize)
                    .filter(|&l| l <= MAX_RECORD)
                else {
                    whole = false;
                    break;
                };
                let Some(sealed) = take(len, &mut rest) else {
                    whole = false;
                    break;
                };
                order += 1;
                records.insert(name, (order, sealed));
            }
            b'D' => {
                records.remove(&name);
            }
            _ => {
                whole = false;
                break;
            }
        }
        frames += 1;
    }
    if !whole {
        tracing::warn!(
            bytes = rest.len(),
            "the journal ends in a broken frame (a crash while writing?); the rest is dropped"
        );
    }
    let mut live: Vec<(usize, Name, Vec<u8>)> = records
        .into_iter()
        .map(|(name, (order, sealed))| (order, name, sealed))
        .collect();
    live.sort_by_key(|(order, ..)| *order);
    Replayed {
        live: live
            .into_iter()
            .map(|(_, name, sealed)| (name, sealed))
            .collect(),
        frames,
        whole,
    }
}

/// Writes `live` as the journal at `path` (aside, then renamed over, the
/// old file shredded) and opens it for appending.
fn compact(path: &Path, live: &[(Name, Vec<u8>)]) -> Result<File, VaultError> {
    let mut bytes = MAGIC.to_vec();
    for (name, sealed) in live {
        encode(
            &Frame::Put {
                name: *name,
                sealed: sealed.clone(),
            },
            &mut bytes,
        );
    }
    // `flows.journal` → `flows.journal-old`, `flows.notes` → `flows.notes-old`:
    // two journals of one name must not share the place.
    let mut old = path.as_os_str().to_owned();
    old.push("-old");
    let old = PathBuf::from(old);
    match fs::rename(path, &old) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io("set aside", path, source)),
    }
    file::write_atomic(path, &bytes)?;
    file::shred(&old)?;
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| io("open", path, source))
}

/// Re-seals every live record of the journal at `path` with `reseal`
/// (the vault's key rotation), rewriting it at once; answers how many
/// records there were. The bot must be stopped.
pub fn reseal(
    path: &Path,
    mut reseal: impl FnMut(&[u8]) -> Result<Vec<u8>, VaultError>,
) -> Result<usize, VaultError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| io("read", path, source))?;
    let live = replay(&bytes)
        .live
        .into_iter()
        .map(|(name, sealed)| Ok((name, reseal(&sealed)?)))
        .collect::<Result<Vec<_>, VaultError>>()?;
    compact(path, &live)?;
    Ok(live.len())
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> VaultError {
    VaultError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: u8) -> Name {
        [n; 32]
    }

    #[tokio::test]
    async fn records_come_back_after_a_reopen_and_removed_ones_do_not() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.journal");
        {
            let (journal, live) = Journal::open(&path).unwrap();
            assert!(live.is_empty());
            journal.put(name(1), b"one".to_vec()).await.unwrap();
            journal.put(name(2), b"two".to_vec()).await.unwrap();
            journal.put(name(1), b"one again".to_vec()).await.unwrap();
            journal.remove(name(2)).await.unwrap();
            journal.put(name(3), b"three".to_vec()).await.unwrap();
        }
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(
            live,
            vec![
                (name(1), b"one again".to_vec()),
                (name(3), b"three".to_vec())
            ]
        );
        let leftovers: Vec<_> = fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec!["flows.journal"], "no temporary file left");
    }

    /// Removing a name no record has costs nothing: callers may remove
    /// what they are not sure was written (a flow's notes).
    #[tokio::test]
    async fn removing_an_absent_record_writes_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.notes");
        let (journal, _) = Journal::open(&path).unwrap();
        journal.put(name(1), b"one".to_vec()).await.unwrap();
        let len = || fs::metadata(&path).unwrap().len();
        let before = len();
        journal.remove(name(2)).await.unwrap();
        assert_eq!(len(), before, "no frame for an absent name");
        journal.remove(name(1)).await.unwrap();
        assert_eq!(len(), before + 33, "a removal frame for a live one");
        journal.remove(name(1)).await.unwrap();
        assert_eq!(len(), before + 33, "and only once");
    }

    /// A start after a clean stop rewrites nothing; one after removals
    /// compacts.
    #[tokio::test]
    async fn only_a_journal_with_dead_frames_is_rewritten_at_open() {
        use std::os::unix::fs::MetadataExt;
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.journal");
        let inode = || fs::metadata(&path).unwrap().ino();
        {
            let (journal, _) = Journal::open(&path).unwrap();
            journal.put(name(1), b"one".to_vec()).await.unwrap();
        }
        let before = inode();
        {
            let (journal, live) = Journal::open(&path).unwrap();
            assert_eq!(live.len(), 1);
            assert_eq!(inode(), before, "nothing to drop: the same file");
            journal.put(name(2), b"two".to_vec()).await.unwrap();
            journal.remove(name(2)).await.unwrap();
        }
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(live, vec![(name(1), b"one".to_vec())]);
        assert_ne!(inode(), before, "dead frames: compacted into a new file");
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_written() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.journal");
        {
            let (journal, _) = Journal::open(&path).unwrap();
            let journal = std::sync::Arc::new(journal);
            let writes = (0..200u8).map(|n| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.put(name(n), vec![n; 100]).await })
            });
            for write in writes {
                write.await.unwrap().unwrap();
            }
        }
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(live.len(), 200);
    }

    #[tokio::test]
    async fn a_frame_cut_short_ends_the_journal_there() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.journal");
        {
            let (journal, _) = Journal::open(&path).unwrap();
            journal.put(name(1), b"kept".to_vec()).await.unwrap();
            journal.put(name(2), b"cut".to_vec()).await.unwrap();
        }
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(live, vec![(name(1), b"kept".to_vec())]);
        // Cut right after a frame's name: appends after it stay readable.
        {
            let (journal, _) = Journal::open(&path).unwrap();
            journal.put(name(2), b"cut".to_vec()).await.unwrap();
        }
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 4 - 3]).unwrap();
        {
            let (journal, live) = Journal::open(&path).unwrap();
            assert_eq!(live, vec![(name(1), b"kept".to_vec())]);
            journal.put(name(3), b"after".to_vec()).await.unwrap();
        }
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(
            live,
            vec![(name(1), b"kept".to_vec()), (name(3), b"after".to_vec())]
        );
        // Not a journal at all: nothing is read, nothing panics.
        fs::write(&path, b"garbage").unwrap();
        let (_journal, live) = Journal::open(&path).unwrap();
        assert!(live.is_empty());
    }

    #[tokio::test]
    async fn the_file_stays_compact_under_churn() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.journal");
        let (journal, _) = Journal::open(&path).unwrap();
        for round in 0..(3 * SLACK as u32) {
            let n = (round % 200) as u8;
            journal.put(name(n), vec![7; 200]).await.unwrap();
            journal.remove(name(n)).await.unwrap();
        }
        journal.put(name(9), vec![9; 200]).await.unwrap();
        let size = fs::metadata(&path).unwrap().len() as usize;
        let frame = 1 + 32 + 4 + 200;
        assert!(
            size < (2 * SLACK + 10) * frame,
            "compacted as it went: {size} bytes"
        );
        drop(journal);
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(live, vec![(name(9), vec![9; 200])]);
    }

    #[test]
    fn resealing_rewrites_every_live_record() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("flows.journal");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (journal, _) = Journal::open(&path).unwrap();
            journal.put(name(1), b"a".to_vec()).await.unwrap();
            journal.put(name(2), b"b".to_vec()).await.unwrap();
        });
        let count = reseal(&path, |sealed| Ok([sealed, b"!"].concat())).unwrap();
        assert_eq!(count, 2);
        let (_journal, live) = Journal::open(&path).unwrap();
        assert_eq!(
            live,
            vec![(name(1), b"a!".to_vec()), (name(2), b"b!".to_vec())]
        );
    }
}
