"""A local one-node Kubernetes built from source: etcd, the control plane, containerd, the kubelet, kube-proxy and
CoreDNS, in a network namespace of its own."""
