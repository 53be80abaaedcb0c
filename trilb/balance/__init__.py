"""Load-balancing algorithms: pure logic, no I/O."""
