"""A lean sans-I/O HTTP/2 (RFC 9113) for the tunnel's HTTP/2 transport: frames, HPACK, the
connection state machine. The public HTTPS front does not use it (it stays on h2 + h2guard)."""
