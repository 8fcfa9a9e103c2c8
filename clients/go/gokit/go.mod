module github.com/kubedisco/kubedisco/clients/go/gokit

go 1.26.0

require (
	github.com/go-kit/log v0.2.0
	github.com/kubedisco/kubedisco/clients/go v0.0.0
)

require (
	github.com/go-kit/kit v0.13.0
	github.com/go-logfmt/logfmt v0.5.1 // indirect
)

// The adapter is built against the client in this repository.
replace github.com/kubedisco/kubedisco/clients/go => ../
