// Package greeter is the example's gRPC service, kubedisco.example.Greeter,
// written out by hand (no protoc needed): one unary method, SayHello, that
// takes and returns a google.protobuf.StringValue.
package greeter

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the full gRPC name of the service.
const ServiceName = "kubedisco.example.Greeter"

const sayHello = "/" + ServiceName + "/SayHello"

// Server is what a Greeter server implements.
type Server interface {
	// SayHello answers a greeting.
	SayHello(ctx context.Context, name *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

// Register registers srv as the Greeter service on s.
func Register(s grpc.ServiceRegistrar, srv Server) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*Server)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "SayHello", Handler: sayHelloHandler}},
		Metadata:    "greeter.go",
	}, srv)
}

func sayHelloHandler(srv any, ctx context.Context, decode func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := decode(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(Server).SayHello(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: sayHello}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(Server).SayHello(ctx, req.(*wrapperspb.StringValue))
	})
}

// Client calls a Greeter service.
type Client struct {
	cc grpc.ClientConnInterface
}

// NewClient returns a Client that calls over cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// SayHello greets name and returns the answer.
func (c *Client) SayHello(ctx context.Context, name string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := c.cc.Invoke(ctx, sayHello, wrapperspb.String(name), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
