//! Text markers exchanged before frames start flowing. See PROTOCOL.md.

/// First stage → parent: `SPORE-READY 1 <os> <arch> <decoders>[ cache=hit|miss]\n`.
pub const READY_PREFIX: &str = "SPORE-READY ";
/// Stage 0 → parent: `SPORE-STAGE\n`, asking for the first stage itself,
/// which the parent sends followed by [`STAGE_END`].
pub const STAGE_LINE: &str = "SPORE-STAGE";
/// Parent → stage 0: the line that ends the first stage it sends.
pub const STAGE_END: &str = "SPORE-END\n";
/// Parent → first stage: run the image the target's cache holds (the
/// ready line said `cache=hit`); no payload follows.
pub const CACHED_HEADER: &str = "cached 0\n";
/// First stage → parent: `SPORE-FAIL <reason>; <reason>...\n`, then exit 1.
pub const FAIL_PREFIX: &str = "SPORE-FAIL ";
/// Child image → parent: `SPORE-UP <protocol> <build-id>\n`; frames follow.
pub const UP_PREFIX: &str = "SPORE-UP ";
/// argv\[1\] that puts a spore image into child mode.
pub const CHILD_ARG: &str = "--spore-child";
/// argv\[1\] that makes a spore image print [`PROBE_REPLY`] and exit 0.
pub const PROBE_ARG: &str = "--spore-probe";
/// What an image prints for [`PROBE_ARG`].
pub const PROBE_REPLY: &str = "spore-probe-ok";
/// Longest handshake line either side accepts, so garbage cannot make a
/// reader buffer without bound.
pub const MAX_LINE: usize = 4096;

/// What the first stage reported in its ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// `uname -s`, e.g. `Linux`.
    pub os: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    /// Payload encodings the target can decode, best first.
    pub decoders: Vec<String>,
    /// What the target's image cache holds, when it has one.
    pub cache: Option<CacheState>,
}

/// The state of the target's image cache for the image the parent named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// It holds the image, and its hash checked out.
    Hit,
    /// It does not (or held a corrupt copy, now deleted): the payload
    /// should be sent for it to keep.
    Miss,
}

/// Parses `SPORE-READY 1 <os> <arch> <decoders>[ cache=hit|miss]`
/// (without the newline). Unknown extra fields are ignored.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix(READY_PREFIX)?;
    let mut it = rest.split_ascii_whitespace();
    if it.next()? != "1" {
        return None;
    }
    let os = it.next()?.to_owned();
    let arch = it.next()?.to_owned();
    let decoders = it.next()?.split(',').map(str::to_owned).collect();
    let cache = it.find_map(|field| match field {
        "cache=hit" => Some(CacheState::Hit),
        "cache=miss" => Some(CacheState::Miss),
        _ => None,
    });
    Some(Ready {
        os,
        arch,
        decoders,
        cache,
    })
}

/// Where a handshake marker starts in a line the target printed: a login
/// shell may print a banner first, even on the same line.
pub fn find_marker(line: &str) -> Option<usize> {
    [READY_PREFIX, FAIL_PREFIX, STAGE_LINE]
        .iter()
        .filter_map(|m| line.find(m))
        .min()
}

/// The payload header line the parent writes after reading the ready line;
/// `store` asks the first stage to keep the image in its cache.
pub fn payload_header(encoding: &str, size: usize, store: bool) -> String {
    let store = if store { " s" } else { "" };
    format!("{encoding} {size}{store}\n")
}

/// The child's confirmation line.
pub fn up_line(build_id: &str) -> String {
    format!("{UP_PREFIX}{} {build_id}\n", crate::PROTOCOL_VERSION)
}

/// Parses an up line into `(protocol, build_id)`.
pub fn parse_up(line: &str) -> Option<(u32, &str)> {
    let rest = line.strip_prefix(UP_PREFIX)?;
    let (proto, build) = rest.split_once(' ')?;
    Some((proto.parse().ok()?, build.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let r = parse_ready("SPORE-READY 1 Linux x86_64 zstd,raw").unwrap();
        assert_eq!(r.os, "Linux");
        assert_eq!(r.arch, "x86_64");
        assert_eq!(r.decoders, ["zstd", "raw"]);
        assert_eq!(r.cache, None);
        let r = parse_ready("SPORE-READY 1 Linux x86_64 raw cache=hit later=1").unwrap();
        assert_eq!(r.cache, Some(CacheState::Hit));
        let r = parse_ready("SPORE-READY 1 Linux x86_64 raw cache=miss").unwrap();
        assert_eq!(r.cache, Some(CacheState::Miss));
        assert!(parse_ready("SPORE-READY 2 Linux x86_64 raw").is_none());
        assert!(parse_ready("hello").is_none());
    }

    #[test]
    fn markers_are_found_after_a_banner() {
        assert_eq!(find_marker("SPORE-STAGE"), Some(0));
        assert_eq!(find_marker("Welcome!SPORE-READY 1 Linux"), Some(8));
        assert_eq!(find_marker("motd SPORE-FAIL x"), Some(5));
        assert_eq!(find_marker("SPORE-UP 2 x"), None);
        assert_eq!(payload_header("zstd", 12, true), "zstd 12 s\n");
        assert_eq!(payload_header("raw", 0, false), "raw 0\n");
    }

    #[test]
    fn up_line_round_trips() {
        let l = up_line("0.1.0-abc");
        assert_eq!(
            parse_up(l.trim_end()),
            Some((crate::PROTOCOL_VERSION, "0.1.0-abc"))
        );
    }
}
