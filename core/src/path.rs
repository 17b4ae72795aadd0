//! Where in the datapath a packet was seen.

/// Records counted per path kind ([`Path::kind_index`]), from the capture's start up to
/// some sequence number. The difference of two tells how many records of each kind lie
/// between them, after their bytes are gone: an output that keeps some paths counts as
/// lost only the evicted records of those.
pub(crate) type KindCounts = [u64; Path::KINDS];

/// Where in the datapath a packet was seen, as the 2-byte tag of the seed format.
///
/// The wire values are those of Tailscale's `wgengine/capture`, so captures open with its
/// dissector as well as with ours.
///
/// # Examples
///
/// ```
/// use pcapcast_core::Path;
///
/// assert_eq!(u16::from(Path::FromPeer), 1);
/// assert_eq!(Path::from(254), Path::Disco);
/// assert_eq!(Path::from(7), Path::Other(7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Sent by the local host towards a peer (outbound).
    FromLocal,
    /// Received from a peer, towards the local host (inbound).
    FromPeer,
    /// Made up by the datapath itself and delivered to the local host (inbound).
    SynthesizedToLocal,
    /// Made up by the datapath itself and sent to a peer (outbound).
    SynthesizedToPeer,
    /// A discovery frame; its payload is not an IP packet.
    Disco,
    /// Any other tag. [`Path::from`] maps known values to the named variants, so
    /// `Other` holds the values that have no name.
    Other(u16),
}

/// Which way a packet went, as pcapng's `epb_flags` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards the local host.
    Inbound,
    /// Away from the local host.
    Outbound,
}

impl Path {
    /// The number of distinct path kinds: the five named paths and [`Path::Other`].
    pub const KINDS: usize = 6;

    /// The direction of a packet on this path, if it has one.
    pub fn direction(self) -> Option<Direction> {
        match self {
            Self::FromPeer | Self::SynthesizedToLocal => Some(Direction::Inbound),
            Self::FromLocal | Self::SynthesizedToPeer => Some(Direction::Outbound),
            Self::Disco | Self::Other(_) => None,
        }
    }

    /// Whether packets on this path are IP packets (every path but [`Path::Disco`] and
    /// [`Path::Other`]).
    pub fn carries_ip(self) -> bool {
        self.direction().is_some()
    }

    /// A short name, used as the pcapng interface name and in the CLI's `--paths`.
    pub fn name(self) -> &'static str {
        match self {
            Self::FromLocal => "from-local",
            Self::FromPeer => "from-peer",
            Self::SynthesizedToLocal => "synth-to-local",
            Self::SynthesizedToPeer => "synth-to-peer",
            Self::Disco => "disco",
            Self::Other(_) => "other",
        }
    }

    /// Index of this path's kind, from 0 to [`Path::KINDS`] - 1, in declaration order.
    pub fn kind_index(self) -> usize {
        match self {
            Self::FromLocal => 0,
            Self::FromPeer => 1,
            Self::SynthesizedToLocal => 2,
            Self::SynthesizedToPeer => 3,
            Self::Disco => 4,
            Self::Other(_) => 5,
        }
    }

    /// One path of each kind, in [`Path::kind_index`] order; `Other` stands for all
    /// unnamed values.
    pub const ALL_KINDS: [Path; Path::KINDS] = [
        Self::FromLocal,
        Self::FromPeer,
        Self::SynthesizedToLocal,
        Self::SynthesizedToPeer,
        Self::Disco,
        Self::Other(0xFFFF),
    ];
}

impl From<Path> for u16 {
    fn from(path: Path) -> u16 {
        match path {
            Path::FromLocal => 0,
            Path::FromPeer => 1,
            Path::SynthesizedToLocal => 2,
            Path::SynthesizedToPeer => 3,
            Path::Disco => 254,
            Path::Other(value) => value,
        }
    }
}

impl From<u16> for Path {
    fn from(value: u16) -> Path {
        match value {
            0 => Path::FromLocal,
            1 => Path::FromPeer,
            2 => Path::SynthesizedToLocal,
            3 => Path::SynthesizedToPeer,
            254 => Path::Disco,
            other => Path::Other(other),
        }
    }
}

impl std::str::FromStr for Path {
    type Err = crate::Error;

    /// Parses a [`Path::name`] or a decimal wire value.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = [
            Path::FromLocal,
            Path::FromPeer,
            Path::SynthesizedToLocal,
            Path::SynthesizedToPeer,
            Path::Disco,
        ];
        if let Some(path) = named.into_iter().find(|p| p.name() == s) {
            return Ok(path);
        }
        s.parse::<u16>()
            .map(Path::from)
            .map_err(|_| crate::Error::UnknownPath { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip() {
        for value in 0..=u16::MAX {
            assert_eq!(u16::from(Path::from(value)), value);
        }
    }

    #[test]
    fn directions_follow_the_original() {
        assert_eq!(Path::FromLocal.direction(), Some(Direction::Outbound));
        assert_eq!(
            Path::SynthesizedToPeer.direction(),
            Some(Direction::Outbound)
        );
        assert_eq!(Path::FromPeer.direction(), Some(Direction::Inbound));
        assert_eq!(
            Path::SynthesizedToLocal.direction(),
            Some(Direction::Inbound)
        );
        assert_eq!(Path::Disco.direction(), None);
        assert!(!Path::Other(9).carries_ip());
    }

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(
            "synth-to-peer".parse::<Path>().unwrap(),
            Path::SynthesizedToPeer
        );
        assert_eq!("254".parse::<Path>().unwrap(), Path::Disco);
        assert!("sideways".parse::<Path>().is_err());
    }
}
