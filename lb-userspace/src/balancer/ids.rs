//! Service and backend ids: the ones recorded in `MAP_NAMES` (name -> id), which survive
//! reloads and restarts, and the free ones an apply hands out to new names.

use std::collections::{HashMap, HashSet};

use lb_common::{MAX_BACKENDS, MAX_SERVICES, name_slot_backend, name_slot_service};

use crate::{
    balancer::{ApplyError, Balancer, Retired},
    config::Config,
};

/// Name -> id, as recorded in MAP_NAMES ("service" for services, "service/server" for servers).
pub(super) type IdsByName = HashMap<String, u32>;

/// "service/server": a server's name in `MAP_NAMES`, in check keys and in logs.
pub(super) fn full_name(service: &str, server: &str) -> String {
    format!("{service}/{server}")
}

/// The ids of one apply: the recorded ones of the names it keeps, and which ids are in use (so
/// never handed out).
#[derive(Debug)]
pub(super) struct Ids {
    services: IdsByName,
    backends: IdsByName,
    used_services: Vec<bool>,
    used_backends: Vec<bool>,
}

impl Ids {
    /// Ids in use: the recorded ones of names `new` keeps, and the `retired` backend ids, whose
    /// stick entries may still exist (never handed out until they are purged).
    pub(super) fn new(services: IdsByName, backends: IdsByName, new: &Config, retired: &Retired) -> Ids {
        let mut used_services = vec![false; MAX_SERVICES as usize];
        let mut used_backends = vec![false; MAX_BACKENDS as usize];
        for id in retired {
            used_backends[*id as usize] = true;
        }
        for s in &new.services {
            if let Some(id) = services.get(&s.name) {
                used_services[*id as usize] = true;
            }
            for v in &s.servers {
                if let Some(id) = backends.get(&full_name(&s.name, &v.name)) {
                    used_backends[*id as usize] = true;
                }
            }
        }
        Ids {
            services,
            backends,
            used_services,
            used_backends,
        }
    }

    /// Forget the recorded services `new` no longer has: (name, id) of each.
    pub(super) fn drop_services(&mut self, new: &Config) -> Vec<(String, u32)> {
        let keep: HashSet<&str> = new.services.iter().map(|s| s.name.as_str()).collect();
        drop_missing(&mut self.services, &keep)
    }

    /// Forget the recorded servers `new` no longer has: ("service/server", id) of each. Their
    /// ids are retired (stick entries may name them): this apply hands none of them out.
    pub(super) fn drop_backends(&mut self, new: &Config) -> Vec<(String, u32)> {
        let names: HashSet<String> = new
            .services
            .iter()
            .flat_map(|s| s.servers.iter().map(|v| full_name(&s.name, &v.name)))
            .collect();
        let keep: HashSet<&str> = names.iter().map(String::as_str).collect();
        let dropped = drop_missing(&mut self.backends, &keep);
        for (_, id) in &dropped {
            self.used_backends[*id as usize] = true;
        }
        dropped
    }

    /// The id of service `name`: its recorded one, else a free one (`true` = new, to record).
    pub(super) fn service(&mut self, name: &str) -> Result<(u32, bool), ApplyError> {
        match self.services.get(name) {
            Some(id) => Ok((*id, false)),
            None => Ok((alloc(&mut self.used_services, "service")?, true)),
        }
    }

    /// The id of server `full` ("service/server"): its recorded one, else a free one (`true` =
    /// new, to record).
    pub(super) fn backend(&mut self, full: &str) -> Result<(u32, bool), ApplyError> {
        match self.backends.get(full) {
            Some(id) => Ok((*id, false)),
            None => Ok((alloc(&mut self.used_backends, "server")?, true)),
        }
    }
}

/// Remove from `ids` the names not in `keep`; returns them, sorted by id (for stable logs).
fn drop_missing(ids: &mut IdsByName, keep: &HashSet<&str>) -> Vec<(String, u32)> {
    let mut gone: Vec<(String, u32)> = ids
        .iter()
        .filter(|(name, _)| !keep.contains(name.as_str()))
        .map(|(name, id)| (name.clone(), *id))
        .collect();
    gone.sort_by_key(|(_, id)| *id);
    for (name, _) in &gone {
        ids.remove(name);
    }
    gone
}

/// The lowest id not in use, now taken.
fn alloc(used: &mut [bool], what: &'static str) -> Result<u32, ApplyError> {
    let max = used.len() as u32;
    let i = used
        .iter()
        .position(|u| !u)
        .ok_or(ApplyError::NoFreeId { what, max })?;
    used[i] = true;
    Ok(i as u32)
}

impl Balancer {
    /// Ids recorded in MAP_NAMES: name -> id, for services and for "service/server".
    pub(super) fn recorded_ids(&self) -> Result<(IdsByName, IdsByName), ApplyError> {
        let mut svcs = HashMap::new();
        let mut bes = HashMap::new();
        for i in 0..MAX_SERVICES {
            if let Some(n) = self.dp.name(name_slot_service(i))? {
                svcs.insert(n, i);
            }
        }
        for i in 0..MAX_BACKENDS {
            if let Some(n) = self.dp.name(name_slot_backend(i))? {
                bes.insert(n, i);
            }
        }
        Ok((svcs, bes))
    }

    /// At a restart over pinned maps: every backend id that a stick entry names but no
    /// recorded name owns is retired, so it is not handed out before the sweeper has deleted
    /// those entries (runs before the runtime starts: no lock is held).
    pub(super) fn retire_referenced_ids(&mut self) -> Result<(), ApplyError> {
        let (_, be_ids) = self.recorded_ids()?;
        let live: HashSet<u32> = be_ids.values().copied().collect();
        let pinned = self.dp.stick_entries()?;
        for (_, e) in pinned.iter().chain(self.dp.migrating_entries()) {
            if e.backend < MAX_BACKENDS && !live.contains(&e.backend) {
                self.retired.insert(e.backend);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::apply::tests::config;

    fn recorded(names: &[(&str, u32)]) -> IdsByName {
        names.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn recorded_ids_are_kept_and_new_names_get_the_lowest_free_ids() {
        let svcs = recorded(&[("web", 1), ("gone", 0)]);
        let bes = recorded(&[("web/app2", 0), ("gone/x", 2)]);
        let mut ids = Ids::new(svcs, bes, &config(), &Retired::from([1]));
        assert_eq!(ids.drop_services(&config()), vec![("gone".to_string(), 0)]);
        assert_eq!(ids.drop_backends(&config()), vec![("gone/x".to_string(), 2)]);
        assert_eq!(ids.service("web").unwrap(), (1, false));
        // The id of a dropped service is free again (its table went with it).
        assert_eq!(ids.service("dns").unwrap(), (0, true));
        assert_eq!(ids.backend("web/app2").unwrap(), (0, false));
        // 1 is retired, 2 retired by this apply (stick entries may still name them): not
        // handed out.
        assert_eq!(ids.backend("web/app1").unwrap(), (3, true));
        assert_eq!(ids.backend("dns/ns1").unwrap(), (4, true));
    }

    /// A server renamed by a reload ("web/old" -> "dns/ns1" here) is one removed and one
    /// added. The removed one's id is retired by that same apply: handing it to the added one
    /// would let the old server's stick entries send its clients to the new one, and the
    /// apply's last step (freeing the removed servers' slots) would zero the new server's
    /// backend value.
    #[test]
    fn a_server_removed_by_an_apply_does_not_lend_its_id_to_one_it_adds() {
        let mut ids = Ids::new(
            recorded(&[("web", 0), ("dns", 1)]),
            recorded(&[("web/app1", 0), ("web/app2", 1), ("web/old", 2)]),
            &config(),
            &Retired::new(),
        );
        assert_eq!(ids.drop_backends(&config()), vec![("web/old".to_string(), 2)]);
        assert_eq!(ids.backend("dns/ns1").unwrap(), (3, true));
    }

    #[test]
    fn running_out_of_ids_is_an_error_naming_the_limit() {
        let retired: Retired = (0..MAX_BACKENDS).collect();
        let mut ids = Ids::new(IdsByName::new(), IdsByName::new(), &config(), &retired);
        let e = ids.backend("web/app1").unwrap_err();
        assert!(
            matches!(e, ApplyError::NoFreeId { what: "server", max } if max == MAX_BACKENDS),
            "{e}"
        );
        assert_eq!(ids.service("web").unwrap(), (0, true));
    }

    #[test]
    fn nothing_is_dropped_when_every_recorded_name_is_kept() {
        let mut ids = Ids::new(
            recorded(&[("web", 0), ("dns", 1)]),
            recorded(&[("web/app1", 0), ("web/app2", 1), ("dns/ns1", 2)]),
            &config(),
            &Retired::new(),
        );
        assert!(ids.drop_services(&config()).is_empty());
        assert!(ids.drop_backends(&config()).is_empty());
        assert_eq!(ids.backend("dns/ns1").unwrap(), (2, false));
    }
}
