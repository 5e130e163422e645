//go:build tools

// Package controlplane pins the Kubernetes control-plane commands that the
// tests and the sandbox run, so that `go mod tidy` keeps them in go.sum.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
