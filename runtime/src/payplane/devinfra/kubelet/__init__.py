"""A process kubelet: runs the pods the real scheduler binds to one local Node as local processes.

There is no container runtime on a development machine of this kind, so ``payplane kubelet`` plays the
kubelet's part against the real kube-apiserver: it registers a Node and keeps it Ready, runs each
container of each pod bound to it as a process from the project's environment (the image is ignored;
the command is the container's, the runtime image's entry point being ``payplane``), gives every pod
an address of its own on the loopback interface as ``status.podIP``, resolves Service names to ready
endpoints through a small DNS server (gRPC ``dns:///`` targets are pointed at it), and reports pod
status like a kubelet does.

Modules: ``podspec`` (pure: a pod → the processes to run), ``status`` (pure: pod and node status),
``dns`` (the Service resolver), ``netaddr`` (pod addresses), ``probes``, ``processes`` (start, stop,
pid records, orphan reaping), ``kubeapi`` (the few REST calls), ``node`` (the loop), ``cli``. See docs/development.md.
"""
