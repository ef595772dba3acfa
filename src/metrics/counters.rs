//! Counter and gauge sets: core-local `Cell`s on the hot path, plain `u64`
//! snapshots when read. One macro defines both forms and their metadata
//! (Prometheus name, type and help), so a new counter is one line.

use std::cell::Cell;

/// Adds one to a core-local counter.
#[inline]
pub(crate) fn inc(cell: &Cell<u64>) {
    cell.set(cell.get().wrapping_add(1));
}

/// Adds `n` to a core-local counter.
#[inline]
pub(crate) fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

/// Subtracts one from a core-local gauge (never below zero).
#[inline]
pub(crate) fn dec(cell: &Cell<u64>) {
    cell.set(cell.get().saturating_sub(1));
}

/// Metadata of one counter or gauge.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    /// Full Prometheus metric name.
    pub name: &'static str,
    /// `"counter"` or `"gauge"`.
    pub kind: &'static str,
    /// One-line help text.
    pub help: &'static str,
}

macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        $cells:ident => $plain:ident {
            $( $field:ident: $kind:literal, $name:literal, $help:literal; )*
        }
    ) => {
        /// Core-local cells (hot path).
        #[derive(Default)]
        pub(crate) struct $cells {
            $( pub $field: std::cell::Cell<u64>, )*
        }

        impl $cells {
            /// Copies the current values.
            pub fn snapshot(&self) -> $plain {
                $plain { $( $field: self.$field.get(), )* }
            }
        }

        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $plain {
            $( #[doc = $help] pub $field: u64, )*
        }

        impl $plain {
            /// Name, type and help of every field, in field order.
            pub const INFO: &'static [$crate::metrics::counters::MetricInfo] = &[
                $( $crate::metrics::counters::MetricInfo { name: $name, kind: $kind, help: $help }, )*
            ];

            /// The values in [`Self::INFO`] order.
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$field, )*]
            }

            /// Adds `other` field by field (gauges add up across cores too).
            pub fn merge(&mut self, other: &Self) {
                $( self.$field = self.$field.wrapping_add(other.$field); )*
            }
        }
    };
}

counter_set! {
    /// Client-side counters and gauges of one core (or merged across cores).
    ClientCells => ClientCounts {
        calls: "counter", "ringrpc_client_calls_total", "Calls made (= ok + every error kind + cancelled).";
        ok: "counter", "ringrpc_client_calls_ok_total", "Calls that returned a reply.";
        timeouts: "counter", "ringrpc_client_errors_timeout_total", "Calls that failed with Timeout.";
        connection_lost: "counter", "ringrpc_client_errors_connection_lost_total", "Calls that failed with ConnectionLost or NotSent.";
        unavailable: "counter", "ringrpc_client_errors_unavailable_total", "Calls that failed with Unavailable.";
        overloaded: "counter", "ringrpc_client_errors_overloaded_total", "Calls that failed with Overloaded.";
        remote: "counter", "ringrpc_client_errors_remote_total", "Calls that failed with a Remote error.";
        protocol: "counter", "ringrpc_client_errors_protocol_total", "Calls that failed with a Protocol (or other) error.";
        cancelled: "counter", "ringrpc_client_cancelled_total", "Calls whose future was dropped before they finished.";
        stale_replies: "counter", "ringrpc_client_stale_replies_total", "Replies dropped because their call had already ended.";
        reconnects: "counter", "ringrpc_client_reconnects_total", "Connections re-established after one closed.";
        connects_failed: "counter", "ringrpc_client_connect_failures_total", "Connection attempts that failed.";
        pings: "counter", "ringrpc_client_pings_total", "Heartbeat pings sent.";
        heartbeat_timeouts: "counter", "ringrpc_client_heartbeat_timeouts_total", "Connections closed because a heartbeat went unanswered.";
        bytes_in: "counter", "ringrpc_client_bytes_in_total", "Bytes received.";
        bytes_out: "counter", "ringrpc_client_bytes_out_total", "Bytes sent.";
        in_flight: "gauge", "ringrpc_client_in_flight", "Calls in flight now.";
        connections: "gauge", "ringrpc_client_connections", "Client connections open now.";
    }
}

counter_set! {
    /// Server-side counters and gauges of one core (or merged across cores).
    ServerCells => ServerCounts {
        requests: "counter", "ringrpc_server_requests_total", "Requests received.";
        ok: "counter", "ringrpc_server_responses_ok_total", "Successful responses sent.";
        app_errors: "counter", "ringrpc_server_errors_application_total", "Handlers that returned an error.";
        panics: "counter", "ringrpc_server_errors_panicked_total", "Handlers that panicked.";
        unknown_method: "counter", "ringrpc_server_errors_unknown_method_total", "Requests for unregistered methods.";
        deadline_exceeded: "counter", "ringrpc_server_errors_deadline_total", "Requests refused or cut off because their budget ran out.";
        invalid_request: "counter", "ringrpc_server_errors_invalid_request_total", "Requests whose payload failed validation.";
        overloaded: "counter", "ringrpc_server_errors_overloaded_total", "Requests refused over the per-connection in-flight limit.";
        cancels: "counter", "ringrpc_server_cancels_total", "Cancel frames received (callers that gave up on a call).";
        cancelled: "counter", "ringrpc_server_cancelled_total", "Async handlers stopped by their caller's cancel.";
        protocol_errors: "counter", "ringrpc_server_protocol_errors_total", "Connections closed for breaking the protocol.";
        read_timeouts: "counter", "ringrpc_server_read_timeouts_total", "Connections closed because a partial frame stalled.";
        rejected: "counter", "ringrpc_server_rejected_connections_total", "Connections refused at the per-core limit (no idle connection to evict).";
        fd_shed: "counter", "ringrpc_server_fd_shed_total", "Connections accepted and closed at once because the process was out of file descriptors (EMFILE/ENFILE).";
        peer_rejected: "counter", "ringrpc_server_peer_limit_rejected_total", "Connections refused at the per-peer-address limit.";
        evicted: "counter", "ringrpc_server_evicted_total", "Idle connections closed (goaway first) to admit a new one at the per-core limit.";
        idle_closed: "counter", "ringrpc_server_idle_closed_total", "Connections closed (goaway first) after the idle timeout.";
        age_closed: "counter", "ringrpc_server_max_age_closed_total", "Connections closed (goaway first) at their maximum age.";
        write_timeouts: "counter", "ringrpc_server_write_timeouts_total", "Connections closed because their replies made no progress within the write timeout.";
        inbound_paused: "counter", "ringrpc_server_inbound_paused_total", "Reads paused because the core's inbound memory budget was full.";
        inbound_closed: "counter", "ringrpc_server_inbound_budget_closed_total", "Connections closed while paused by the inbound memory budget (their partial frame stalled past the read timeout).";
        inbound_bytes: "gauge", "ringrpc_server_inbound_bytes", "Bytes of partially received frames held now (what the inbound budget caps).";
        accepted: "counter", "ringrpc_server_accepted_total", "Connections accepted.";
        permission_denied: "counter", "ringrpc_server_permission_denied_total", "Calls the authorization hook refused (PermissionDenied).";
        tls_handshakes: "counter", "ringrpc_server_tls_handshakes_total", "TLS handshakes completed.";
        tls_failed_no_certificate: "counter", "ringrpc_server_tls_failed_no_certificate_total", "TLS handshakes failed: the client presented no certificate.";
        tls_failed_unknown_ca: "counter", "ringrpc_server_tls_failed_unknown_ca_total", "TLS handshakes failed: the certificate chains to no trusted CA.";
        tls_failed_expired: "counter", "ringrpc_server_tls_failed_expired_total", "TLS handshakes failed: the certificate expired (or is not valid yet).";
        tls_failed_bad_sni: "counter", "ringrpc_server_tls_failed_bad_sni_total", "TLS handshakes failed: a server name (SNI) this server does not serve.";
        tls_failed_garbage: "counter", "ringrpc_server_tls_failed_garbage_total", "TLS handshakes failed: bytes that are not TLS, or a malformed message.";
        tls_failed_timeout: "counter", "ringrpc_server_tls_failed_timeout_total", "TLS handshakes not finished within the handshake timeout.";
        tls_failed_other: "counter", "ringrpc_server_tls_failed_other_total", "TLS handshakes failed for another reason (version, ALPN, ...).";
        tls_refused: "counter", "ringrpc_server_tls_handshakes_refused_total", "Connections closed at once because their core had as many handshakes running as allowed.";
        tls_record_errors: "counter", "ringrpc_server_tls_record_errors_total", "TLS connections closed for a bad record after the handshake.";
        handshaking: "gauge", "ringrpc_server_tls_handshaking", "TLS handshakes running now.";
        bytes_in: "counter", "ringrpc_server_bytes_in_total", "Bytes received.";
        bytes_out: "counter", "ringrpc_server_bytes_out_total", "Bytes sent.";
        connections: "gauge", "ringrpc_server_connections", "Server connections open now.";
        tasks: "gauge", "ringrpc_server_tasks", "Async handler tasks running now.";
    }
}
