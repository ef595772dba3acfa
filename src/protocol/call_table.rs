//! The pending-call table: a `slab` of in-flight calls addressed by [`CallId`].
//!
//! A call's slot index plus the table's generation at insert time *is* its wire
//! call id, so a reply finds its call by direct indexing, with no hashing.
//! Invariant: an id resolves only to the call it was issued for. Once a slot is
//! freed (reply delivered, timeout, cancel) and reused, the old id's generation
//! no longer matches and a late reply to it is reported as stale.

use super::header::CallId;
use slab::Slab;

struct Entry<T> {
    generation: u32,
    value: T,
}

/// A slab of in-flight calls of type `T`, indexed by generation-checked [`CallId`]s.
pub struct CallTable<T> {
    slots: Slab<Entry<T>>,
    next_generation: u32,
}

impl<T> std::fmt::Debug for CallTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTable")
            .field("in_flight", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<T> Default for CallTable<T> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<T> CallTable<T> {
    /// An empty table with room for `capacity` calls before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: Slab::with_capacity(capacity),
            next_generation: 1,
        }
    }

    /// Stores a new call and returns its id.
    pub fn insert(&mut self, value: T) -> CallId {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let index = self.slots.insert(Entry { generation, value });
        CallId {
            index: index as u32,
            generation,
        }
    }

    /// The call `id` refers to, or `None` if that call is gone (a stale id).
    pub fn get_mut(&mut self, id: CallId) -> Option<&mut T> {
        match self.slots.get_mut(id.index as usize) {
            Some(entry) if entry.generation == id.generation => Some(&mut entry.value),
            _ => None,
        }
    }

    /// Removes and returns the call `id` refers to, or `None` if it is stale.
    pub fn remove(&mut self, id: CallId) -> Option<T> {
        self.get_mut(id)?;
        Some(self.slots.remove(id.index as usize).value)
    }

    /// Slots held (in use or free) before the table must grow.
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// With no call in flight, lets go of the room a burst grew, keeping
    /// `capacity` slots. Ids issued before stay stale: generations go on
    /// counting from where they were.
    pub fn release_room(&mut self, capacity: usize) {
        if self.slots.is_empty() && self.slots.capacity() > capacity {
            self.slots = Slab::with_capacity(capacity);
        }
    }

    /// Number of calls in flight.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Mutable access to every call in flight with its id (e.g. to fail them all).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (CallId, &mut T)> {
        self.slots.iter_mut().map(|(index, entry)| {
            (
                CallId {
                    index: index as u32,
                    generation: entry.generation,
                },
                &mut entry.value,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_to_their_own_call() {
        let mut table = CallTable::default();
        let a = table.insert("a");
        let b = table.insert("b");
        assert_eq!(table.get_mut(a).copied(), Some("a"));
        assert_eq!(table.remove(b), Some("b"));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn reused_slot_rejects_the_old_id() {
        let mut table = CallTable::default();
        let old = table.insert(1);
        assert_eq!(table.remove(old), Some(1));
        let new = table.insert(2);
        assert_eq!(new.index, old.index, "slab reuses the slot");
        assert_ne!(new.generation, old.generation);
        assert!(table.get_mut(old).is_none(), "late reply is stale");
        assert!(table.remove(old).is_none());
        assert_eq!(table.remove(new), Some(2));
        assert!(table.is_empty());
    }

    #[test]
    fn vacant_and_out_of_range_ids_are_stale() {
        let mut table: CallTable<u8> = CallTable::default();
        assert!(table
            .get_mut(CallId {
                index: 0,
                generation: 1
            })
            .is_none());
        assert!(table
            .remove(CallId {
                index: 999,
                generation: 0
            })
            .is_none());
    }

    #[test]
    fn generation_skips_zero_on_wrap() {
        let mut table = CallTable::<()> {
            next_generation: u32::MAX,
            ..CallTable::default()
        };
        let a = table.insert(());
        let b = table.insert(());
        assert_eq!(a.generation, u32::MAX);
        assert_eq!(b.generation, 1);
    }

    #[test]
    fn iter_mut_visits_all_calls() {
        let mut table = CallTable::default();
        let ids: Vec<_> = (0..5).map(|i| table.insert(i)).collect();
        table.remove(ids[2]);
        let seen: Vec<_> = table.iter_mut().map(|(id, v)| (id, *v)).collect();
        assert_eq!(seen.len(), 4);
        for (id, v) in seen {
            assert_eq!(ids[v as usize], id);
        }
    }

    #[test]
    fn released_room_shrinks_only_an_empty_table_and_old_ids_stay_stale() {
        let mut table = CallTable::with_capacity(4);
        let ids: Vec<_> = (0..100).map(|i| table.insert(i)).collect();
        assert!(table.capacity() >= 100);
        table.release_room(4);
        assert!(table.capacity() >= 100, "calls in flight: nothing released");
        ids.iter()
            .for_each(|id| assert!(table.remove(*id).is_some()));
        table.release_room(4);
        assert!(
            table.capacity() < 100,
            "empty: back to {}",
            table.capacity()
        );
        let fresh = table.insert(7);
        assert_eq!(fresh.index, ids[0].index, "the slot is reused");
        assert!(table.get_mut(ids[0]).is_none(), "an old id is stale");
        assert_eq!(table.get_mut(fresh), Some(&mut 7));
    }
}
