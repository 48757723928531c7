"""Dev tooling: the embedded broker, local JVM servers, the local stack, probe, workload, demo and example flows. The product never imports it."""
