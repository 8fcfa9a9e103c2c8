module github.com/kubedisco/kubedisco/examples/go-grpc

go 1.26.0

require (
	github.com/kubedisco/kubedisco/clients/go v0.0.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)

// The client module from this repository, not a release.
replace github.com/kubedisco/kubedisco/clients/go => ../../clients/go
