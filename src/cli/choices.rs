//! The flags that take one of a few words, as clap parses and lists them
//! (`--help` shows each variant's doc). Each converts into the type of the
//! layer it configures, so those types need not know clap.

use clap::ValueEnum;

use crate::dns::answer::PodRecords;
use crate::index::topology::DefaultTopology;
use crate::logging::LogFormat;
use crate::source::kubernetes::{ApiEncoding, ListStrategy, WatchSlices};

/// `--default-topology`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DefaultTopologyArg {
    /// One tier: every endpoint equal (kube-proxy's default).
    None,
    /// Prefer endpoints in the agent's zone.
    Zone,
}

impl From<DefaultTopologyArg> for DefaultTopology {
    fn from(arg: DefaultTopologyArg) -> Self {
        match arg {
            DefaultTopologyArg::None => Self::None,
            DefaultTopologyArg::Zone => Self::Zone,
        }
    }
}

/// `--pod-records`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PodRecordsArg {
    /// `<a-b-c-d>.<ns>.pod.<zone>` answers the address it spells, unchecked
    /// (CoreDNS's `pods insecure`, kubeadm's default).
    Insecure,
    /// No pod names: NXDOMAIN.
    Disabled,
}

impl From<PodRecordsArg> for PodRecords {
    fn from(arg: PodRecordsArg) -> Self {
        match arg {
            PodRecordsArg::Insecure => Self::Insecure,
            PodRecordsArg::Disabled => Self::Disabled,
        }
    }
}

/// `--list-strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListStrategyArg {
    /// Streaming lists when the API server serves them, else list+watch.
    Auto,
    /// Always `watch?sendInitialEvents=true` (Kubernetes WatchList).
    Streaming,
    /// Always paginated list, then watch.
    List,
}

impl From<ListStrategyArg> for ListStrategy {
    fn from(arg: ListStrategyArg) -> Self {
        match arg {
            ListStrategyArg::Auto => Self::Auto,
            ListStrategyArg::Streaming => Self::Streaming,
            ListStrategyArg::List => Self::List,
        }
    }
}

/// `--api-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ApiEncodingArg {
    /// Kubernetes protobuf, through the agent's own watcher.
    Protobuf,
    /// JSON, through kube-runtime's watcher.
    Json,
}

impl From<ApiEncodingArg> for ApiEncoding {
    fn from(arg: ApiEncodingArg) -> Self {
        match arg {
            ApiEncodingArg::Protobuf => Self::Protobuf,
            ApiEncodingArg::Json => Self::Json,
        }
    }
}

/// `--watch-slices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum WatchSlicesArg {
    /// Only the slices of headless Services and of Services labelled
    /// kubedisco.io/expose=true, selected by label on the API server.
    Served,
    /// Every EndpointSlice (also those of plain ClusterIP Services).
    All,
}

impl From<WatchSlicesArg> for WatchSlices {
    fn from(arg: WatchSlicesArg) -> Self {
        match arg {
            WatchSlicesArg::Served => Self::Served,
            WatchSlicesArg::All => Self::All,
        }
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Json => Self::Json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all<A: ValueEnum + Copy + Into<D>, D>() -> Vec<D> {
        A::value_variants().iter().map(|&arg| arg.into()).collect()
    }

    /// Each word maps to the domain value of the same name, in order.
    #[test]
    fn every_choice_converts_to_its_namesake() {
        assert_eq!(
            all::<DefaultTopologyArg, DefaultTopology>(),
            [DefaultTopology::None, DefaultTopology::Zone]
        );
        assert_eq!(
            all::<PodRecordsArg, PodRecords>(),
            [PodRecords::Insecure, PodRecords::Disabled]
        );
        assert_eq!(
            all::<ListStrategyArg, ListStrategy>(),
            [
                ListStrategy::Auto,
                ListStrategy::Streaming,
                ListStrategy::List
            ]
        );
        assert_eq!(
            all::<ApiEncodingArg, ApiEncoding>(),
            [ApiEncoding::Protobuf, ApiEncoding::Json]
        );
        assert_eq!(
            all::<WatchSlicesArg, WatchSlices>(),
            [WatchSlices::Served, WatchSlices::All]
        );
        assert_eq!(
            all::<LogFormatArg, LogFormat>(),
            [LogFormat::Text, LogFormat::Json]
        );
    }
}
