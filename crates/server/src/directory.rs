//! An in-memory copy of the catalog entries every request needs: folders, OAuth clients and
//! each folder's segment ids. Requests never wait on SQL for these.
//!
//! The server updates the copy right after its own catalog writes, and a background task reloads
//! it whenever the catalog's change generation moves (changes made by `segmart admin` or, in a
//! scale-out deployment, by another node).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use segmart_domain::profile::SegmentRef;
use segmart_domain::segment::Segment;
use segmart_domain::{ClientId, FolderId, SegmentKey, SegmentNum};
use segmart_storage::catalog::{Catalog, CatalogResult, Folder, OAuthClient};

/// Segment id → what profile operations need to know: every batch item and file line resolves
/// its segment ids here, so this is on the hot path (see [`crate::segment_map`]).
pub use crate::segment_map::SegmentMap;

/// A folder and the segments profile operations may reference.
#[derive(Debug, Clone)]
pub struct FolderEntry {
    pub folder: Folder,
    pub segments: SegmentMap,
}

#[derive(Default)]
struct Data {
    folders: HashMap<FolderId, FolderEntry>,
    clients: HashMap<ClientId, OAuthClient>,
    /// Segment number → its folder and id, to turn stored numbers back into ids.
    segment_keys: HashMap<SegmentNum, (FolderId, SegmentKey)>,
    generation: i64,
}

/// The cache. Cheap to share; all methods take `&self`.
#[derive(Default)]
pub struct Directory {
    data: RwLock<Data>,
    /// Counts this server's own `put_*` updates, so a reload that read the catalog before one
    /// of them never installs a copy without it.
    local_writes: std::sync::atomic::AtomicU64,
}

impl Directory {
    /// Loads everything from the catalog.
    pub async fn load(catalog: &dyn Catalog) -> CatalogResult<Arc<Directory>> {
        let directory = Arc::new(Directory::default());
        directory.reload(catalog).await?;
        Ok(directory)
    }

    /// Replaces the copy with the catalog's current state.
    pub async fn reload(&self, catalog: &dyn Catalog) -> CatalogResult<()> {
        use std::sync::atomic::Ordering;
        loop {
            let writes = self.local_writes.load(Ordering::SeqCst);
            let data = Self::read_catalog(catalog).await?;
            let mut current = self.data.write();
            // A put_* that ran while the catalog was read may be missing from `data`: read again.
            if self.local_writes.load(Ordering::SeqCst) == writes {
                *current = data;
                return Ok(());
            }
        }
    }

    async fn read_catalog(catalog: &dyn Catalog) -> CatalogResult<Data> {
        let generation = catalog.generation().await?;
        let folders = catalog.list_folders(None).await?;
        let clients = catalog.list_clients(None).await?;
        let segments = catalog.all_segments().await?;
        let mut data = Data {
            generation,
            ..Data::default()
        };
        for folder in folders {
            data.folders.insert(
                folder.id,
                FolderEntry {
                    folder,
                    segments: SegmentMap::default(),
                },
            );
        }
        for client in clients {
            data.clients.insert(client.id, client);
        }
        for segment in segments {
            insert_segment(&mut data, &segment);
        }
        Ok(data)
    }

    /// Reloads when the catalog changed since the last load.
    pub async fn refresh_if_changed(&self, catalog: &dyn Catalog) -> CatalogResult<bool> {
        let generation = catalog.generation().await?;
        if generation == self.data.read().generation {
            return Ok(false);
        }
        self.reload(catalog).await?;
        Ok(true)
    }

    pub fn folder(&self, id: FolderId) -> Option<Folder> {
        self.data.read().folders.get(&id).map(|f| f.folder.clone())
    }

    pub fn client(&self, id: ClientId) -> Option<OAuthClient> {
        self.data.read().clients.get(&id).cloned()
    }

    /// Runs `f` with the folder's segment map under one read lock (a whole batch resolves
    /// against one consistent view).
    pub fn with_segments<R>(
        &self,
        folder: FolderId,
        f: impl FnOnce(&SegmentMap) -> R,
    ) -> Option<R> {
        let data = self.data.read();
        data.folders.get(&folder).map(|entry| f(&entry.segments))
    }

    /// The ids of segment numbers (unknown numbers are skipped).
    pub fn segment_keys(&self, nums: impl Iterator<Item = SegmentNum>) -> Vec<Option<SegmentKey>> {
        let data = self.data.read();
        nums.map(|num| data.segment_keys.get(&num).map(|(_, key)| key.clone()))
            .collect()
    }

    /// The folder and id of segment numbers (`None` for unknown numbers).
    pub fn segment_locations(
        &self,
        nums: impl Iterator<Item = SegmentNum>,
    ) -> Vec<Option<(FolderId, SegmentKey)>> {
        let data = self.data.read();
        nums.map(|num| data.segment_keys.get(&num).cloned())
            .collect()
    }

    /// Records a segment the server just wrote to the catalog.
    pub fn put_segment(&self, segment: &Segment) {
        self.local_writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        insert_segment(&mut self.data.write(), segment);
    }

    /// Records a folder the server just wrote to the catalog.
    pub fn put_folder(&self, folder: Folder) {
        self.local_writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut data = self.data.write();
        data.folders
            .entry(folder.id)
            .and_modify(|entry| entry.folder = folder.clone())
            .or_insert(FolderEntry {
                folder,
                segments: SegmentMap::default(),
            });
    }

    /// Records a client the server just wrote to the catalog.
    pub fn put_client(&self, client: OAuthClient) {
        self.local_writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.data.write().clients.insert(client.id, client);
    }
}

fn insert_segment(data: &mut Data, segment: &Segment) {
    let Some(entry) = data.folders.get_mut(&segment.folder) else {
        return;
    };
    entry.segments.insert(
        segment.key.as_str(),
        SegmentRef {
            num: segment.num,
            ttl_minutes: segment.spec.ttl_minutes,
            selectable: segment.spec.selectable,
        },
    );
    data.segment_keys
        .insert(segment.num, (segment.folder, segment.key.clone()));
}
