module github.com/kubedisco/kubedisco/tests/go-resolver

go 1.24.0
