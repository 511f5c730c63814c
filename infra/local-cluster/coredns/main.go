// CoreDNS answering the cluster's *.svc.cluster.local names from the apiserver: the
// upstream main (coredns.go) with only the plugins infra/local-cluster's Corefile names,
// instead of all of them, which would pull in every cloud provider's SDK.
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
