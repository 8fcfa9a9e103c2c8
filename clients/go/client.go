package kubedisco

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvAddr is the environment variable that holds the agent's address.
const EnvAddr = "KUBEDISCO_ADDR"

// DefaultAddr is the agent's address when KUBEDISCO_ADDR is unset: where a
// sidecar agent listens.
const DefaultAddr = "http://127.0.0.1:8053"

// Errors that calls wrap, for errors.Is. Each stands for codes of the
// agent's JSON errors ({"error": "...", "code": "..."}); see APIError.
var (
	// ErrServiceNotFound: the agent does not serve the Service (there is no
	// such Service, or it is a ClusterIP Service without the
	// kubedisco.io/expose annotation). Not the same as ErrNoEndpoints.
	// Code service_not_found.
	ErrServiceNotFound = errors.New("service does not exist")
	// ErrNoEndpoints: the Service exists but has no usable endpoint (for the
	// port asked for) right now. Code no_endpoints.
	ErrNoEndpoints = errors.New("no usable endpoints")
	// ErrNoSuchPort: the Service has no port of the name asked for, or
	// several ports and none was named. Code no_such_port.
	ErrNoSuchPort = errors.New("no such port")
	// ErrNotSynced: the agent has not completed its first sync yet; retry
	// shortly. Code not_synced.
	ErrNotSynced = errors.New("agent has not synced yet")
	// ErrOverloaded: the agent is at one of its limits (code
	// too_many_watch_streams: --max-watch-streams; too_many_connections:
	// --http-max-connections) and refused the request; retry later, with
	// backoff.
	ErrOverloaded = errors.New("agent is overloaded")
	// ErrUnavailable: the agent cannot answer now for another reason (a
	// 503 with a code this client does not know, or from a proxy in
	// between); retry later.
	ErrUnavailable = errors.New("agent is unavailable")
	// ErrBadRequest: the agent refused the request's parameters (code
	// bad_request); the same request will fail again.
	ErrBadRequest = errors.New("bad request")
)

// The codes of the agent's JSON errors (APIError.Code). The agent
// documents them in the README's HTTP API section.
const (
	CodeBadRequest          = "bad_request"
	CodeNotFound            = "not_found" // no such route
	CodeServiceNotFound     = "service_not_found"
	CodeNoSuchPort          = "no_such_port"
	CodeNoEndpoints         = "no_endpoints"
	CodeNotSynced           = "not_synced"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeBodyNotAllowed      = "body_not_allowed"
	CodeTooManyWatchStreams = "too_many_watch_streams"
	CodeTooManyConnections  = "too_many_connections"
	CodeHeaderTooLarge      = "header_too_large"
	CodeURITooLong          = "uri_too_long"
)

// errorOfCode is the sentinel each code means; codes without one (a route
// or method this agent does not have, an internal error) are APIErrors
// only.
var errorOfCode = map[string]error{
	CodeServiceNotFound:     ErrServiceNotFound,
	CodeNoEndpoints:         ErrNoEndpoints,
	CodeNoSuchPort:          ErrNoSuchPort,
	CodeNotSynced:           ErrNotSynced,
	CodeTooManyWatchStreams: ErrOverloaded,
	CodeTooManyConnections:  ErrOverloaded,
	CodeBadRequest:          ErrBadRequest,
}

// APIError is an error answer of the agent: its status, its
// machine-readable code and its message. errors.Is matches it against the
// sentinel its code stands for (ErrServiceNotFound, ErrNoEndpoints,
// ErrNoSuchPort, ErrNotSynced, ErrOverloaded, ErrUnavailable,
// ErrBadRequest); a 503 whose code this client does not know matches
// ErrUnavailable.
type APIError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Code is the agent's error code (one of the Code constants; empty
	// when the answer had none, e.g. from a proxy in between).
	Code string
	// Message is the agent's error message, for people.
	Message string
	// RetryAfter is the answer's Retry-After (the agent sends one with
	// every 503); 0 when it had none.
	RetryAfter time.Duration
	kind       error
}

// Error implements error.
func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("kubedisco: agent answered %d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("kubedisco: agent answered %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// Unwrap returns the sentinel error the answer means, if any.
func (e *APIError) Unwrap() error { return e.kind }

// Client talks to one kubedisco agent. It is safe for concurrent use.
type Client struct {
	base    string // scheme://host[/prefix], no trailing slash
	http    *http.Client
	timeout time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client use hc for its requests. hc must not set
// a Timeout if the Client is used for watches (they are long-lived).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithTimeout sets how long one request (not a watch) may take when its
// context has no deadline of its own. Default 5s.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// NewClient returns a Client for the agent at addr: a URL
// ("http://127.0.0.1:8053") or host:port ("127.0.0.1:8053").
func NewClient(addr string, opts ...Option) (*Client, error) {
	base, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{base: base, timeout: 5 * time.Second}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Transport: newAgentTransport()}
	}
	return c, nil
}

// Addr returns the agent's base URL.
func (c *Client) Addr() string { return c.base }

func parseAddr(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", errors.New("kubedisco: empty agent address")
	}
	raw := addr
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("kubedisco: invalid agent address %q: %w", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("kubedisco: invalid agent address %q: scheme must be http or https", addr)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("kubedisco: invalid agent address %q: want http://host:port or host:port", addr)
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/"), nil
}

// newAgentTransport is an HTTP transport for a local agent: never through a
// proxy, quick to give up on a dead address.
func newAgentTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

var defaultClient struct {
	once   sync.Once
	client *Client
	err    error
}

// DefaultClient returns the shared Client for KUBEDISCO_ADDR (DefaultAddr
// when unset), made on first use. The package-level helpers use it.
func DefaultClient() (*Client, error) {
	defaultClient.once.Do(func() {
		defaultClient.client, defaultClient.err = NewClient(AddrFromEnv())
	})
	return defaultClient.client, defaultClient.err
}

// AddrFromEnv returns KUBEDISCO_ADDR, or DefaultAddr when it is unset.
func AddrFromEnv() string {
	if addr := os.Getenv(EnvAddr); addr != "" {
		return addr
	}
	return DefaultAddr
}

// Lookup returns the endpoints of service ("orders.shop") from the agent
// at KUBEDISCO_ADDR. See Client.Lookup.
func Lookup(ctx context.Context, service string) ([]Endpoint, error) {
	c, err := DefaultClient()
	if err != nil {
		return nil, err
	}
	return c.Lookup(ctx, service)
}

// Pick returns one address ("ip:port") of service's port from the agent at
// KUBEDISCO_ADDR. See Client.Pick.
func Pick(ctx context.Context, service, port string) (string, error) {
	c, err := DefaultClient()
	if err != nil {
		return "", err
	}
	return c.Pick(ctx, service, port)
}

// Lookup returns the endpoints the agent serves for service
// ("<service>.<namespace>"). A Service without usable endpoints gives an
// empty list and no error; one the agent does not serve gives an error that
// wraps ErrServiceNotFound.
func (c *Client) Lookup(ctx context.Context, service string) ([]Endpoint, error) {
	name, err := ParseServiceName(service)
	if err != nil {
		return nil, err
	}
	svc, err := c.Service(ctx, name.Namespace, name.Name)
	if err != nil {
		return nil, err
	}
	if svc.Endpoints == nil {
		svc.Endpoints = []Endpoint{}
	}
	return svc.Endpoints, nil
}

// Service returns the agent's state of one Service. One the agent does not
// serve gives an error that wraps ErrServiceNotFound.
func (c *Client) Service(ctx context.Context, namespace, name string) (*Service, error) {
	var svc Service
	path := "/v1/services/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
	if err := c.get(ctx, path, &svc); err != nil {
		return nil, err
	}
	if err := svc.validate(namespace, name); err != nil {
		return nil, fmt.Errorf("kubedisco: malformed answer from the agent: %w", err)
	}
	if !svc.Exists {
		return nil, fmt.Errorf("kubedisco: %s/%s: %w", namespace, name, ErrServiceNotFound)
	}
	return &svc, nil
}

// Pick returns one address ("ip:port", brackets around IPv6) of service's
// port called port, chosen by the agent's smooth weighted round-robin. An
// empty port means the Service's only port. Errors from the agent are
// *APIError and wrap the sentinel of their code (ErrServiceNotFound,
// ErrNoEndpoints, ErrNoSuchPort, ErrNotSynced, ErrOverloaded, ...).
func (c *Client) Pick(ctx context.Context, service, port string) (string, error) {
	name, err := ParseServiceName(service)
	if err != nil {
		return "", err
	}
	path := "/v1/pick/" + url.PathEscape(name.Namespace) + "/" + url.PathEscape(name.Name)
	if port != "" {
		path += "?port=" + url.QueryEscape(port)
	}
	var picked struct {
		Address string `json:"address"`
	}
	if err := c.get(ctx, path, &picked); err != nil {
		return "", err
	}
	if _, _, err := net.SplitHostPort(picked.Address); err != nil {
		return "", fmt.Errorf("kubedisco: malformed answer from the agent: address %q: %w", picked.Address, err)
	}
	return picked.Address, nil
}

// get fetches path and decodes a 200 answer into out.
func (c *Client) get(ctx context.Context, path string, out any) error {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("kubedisco: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("kubedisco: agent at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readAPIError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxLine)).Decode(out); err != nil {
		return fmt.Errorf("kubedisco: malformed answer from the agent: %w", err)
	}
	return nil
}

// readAPIError turns a non-200 answer into an *APIError, by the code the
// agent puts in every error answer.
func readAPIError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var answer struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &answer) == nil && answer.Error != "" {
		msg = answer.Error
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e := &APIError{StatusCode: resp.StatusCode, Code: answer.Code, Message: msg, kind: errorOfCode[answer.Code]}
	if e.kind == nil && resp.StatusCode == http.StatusServiceUnavailable {
		// 503 means "try again later" whatever the code: a newer agent's
		// code, or none from a proxy in between.
		e.kind = ErrUnavailable
	}
	if seconds, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && seconds > 0 {
		e.RetryAfter = time.Duration(seconds) * time.Second
	}
	return e
}
