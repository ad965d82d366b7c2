//! Opening any port spec, whichever crate's driver it names.

use fastpath_mempool::Mempool;
use fastpath_pmd::{Error, Port, Spec};

/// Every port form the command accepts, for errors and help.
pub fn forms() -> Vec<&'static str> {
    let mut v = fastpath_pmd::PORT_FORMS.to_vec();
    v.push(fastpath_vhost_user::FORM);
    v
}

/// Opens port `id` from `spec`.
pub fn open(id: u16, spec: &str, pool: &Mempool) -> Result<Box<dyn Port>, Error> {
    if let Some(p) = fastpath_pmd::open_port(id, spec, pool)? {
        return Ok(p);
    }
    if let Some(p) = fastpath_vhost_user::open_port(id, spec, pool)? {
        return Ok(p);
    }
    let s = Spec::parse_port(spec)?;
    let problem = format!("unknown driver '{}'", s.name);
    Err(s.error(&problem, Some(&forms().join(" | "))))
}
