"""The master: forks workers into slots, supervises them, reloads, stops.

Theory of operation. The master is plain synchronous Python that never runs an event
loop (and never imports trio), so fork() is always safe here: the pre-fork pattern
of gunicorn's arbiter and HAProxy's master-worker mode.

- Slots. ``global.workers`` gives N slots. Each slot owns one listening socket per bind
  address (master/sockets.py). A worker serves exactly one slot.
- Generations. Start-up creates generation 1. SIGHUP re-reads the config; if it is
  invalid (or a new address cannot be bound) the error is logged and nothing changes.
  Otherwise generation n+1 is forked on the same sockets; when all its workers say
  they are ready (a byte on a pipe), every older generation gets SIGTERM and drains:
  it stops accepting, its connections get ``grace`` seconds, and it is SIGKILLed at
  that deadline (plus a margin) so old workers never pile up. Since accept queues
  live in sockets shared by both generations, no connection is refused or reset.
- Respawn. A worker of the current generation that exits is forked again into its
  slot after a back-off that doubles while workers die young, so a crash loop does
  not spin the CPU; the slot's socket stayed open in the master all along.
- Stop. SIGTERM/SIGINT: every worker gets SIGTERM and drains as above; the master
  waits for them and exits 0. A second stop signal kills the workers at once.

Signals arrive as bytes on a pipe (master/signals.py) and the loop handles them as
data. The handle_<command> methods are the unit of behaviour; tests call them.

It does not serve traffic, run an event loop or import trio: the worker does
(imported only in the forked child), and sockets are master/sockets.py's.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import time
from dataclasses import dataclass, field

from trilb.config.load import load_config
from trilb.config.schema import Config
from trilb.control.shared import SharedState
from trilb.errors import ConfigError, StartupError
from trilb.master.signals import HANDLED, SignalPipe, reset_in_child
from trilb.master.sockets import SocketSet
from trilb.tls import ServerTls, server_tls

log = logging.getLogger(__name__)

# First respawn delay, doubled per young death up to the cap: fast recovery from a
# one-off crash, bounded CPU for a worker that crashes at start.
BACKOFF_MIN = 0.05
BACKOFF_MAX = 10.0
# A worker that lived this long was healthy: its next death starts back-off afresh.
HEALTHY_AFTER = 5.0
# A new generation that is not ready in this time replaces the old one anyway, so a
# reload never waits forever on a stuck worker.
READY_TIMEOUT = 15.0
# A relayed connection's descriptors: its two sockets (pipes for splicing come from a
# pool bounded apart from maxconn, so they are not counted, as HAProxy's maxsock does).
FDS_PER_CONNECTION = 2
# The slot number of a generation's control process among its children.
CONTROL = -1
# Extra time past ``grace`` before SIGKILL: workers cancel their own connections at
# ``grace`` and need a moment to exit.
KILL_MARGIN = 2.0


@dataclass(eq=False)
class Generation:
    number: int
    config: Config
    slots: int
    started: float
    # The TLS frontends' contexts, built before the fork: the workers share them.
    tls: dict[str, ServerTls] = field(default_factory=dict)
    # What its control process and its workers share (server states, weights,
    # counters). None: no health check and no admin API, so no control process runs.
    shared: SharedState | None = None
    # The generation its shared state was inherited from, and that one's operator state
    # then: what the API changed there since is replayed here at the hand-over.
    parent: tuple[Generation, bytes] | None = None
    draining: bool = False
    # When its remaining workers get SIGKILL (set when draining starts).
    deadline: float = float("inf")
    children: dict[int, Child] = field(default_factory=dict)

    def ready(self) -> bool:
        """Every slot has a worker that said it is ready; and the control process too
        when dns: servers have no address until its first lookup."""
        workers = sum(c.ready for s, c in self.children.items() if s != CONTROL)
        if workers != self.slots:
            return False
        if any(s.dns for b in self.config.backends.values() for s in b.servers):
            control = self.children.get(CONTROL)
            return control is not None and control.ready
        return True


@dataclass(eq=False)
class Child:
    pid: int
    slot: int
    generation: Generation
    started: float
    ready_fd: int | None
    ready: bool = False


def _name(child: Child) -> str:
    return "control process" if child.slot == CONTROL else f"worker {child.slot + 1}"


def resolve_workers(config: Config) -> int:
    """The slot count: ``global.workers``, or one per CPU this process may use."""
    if config.global_.workers is not None:
        return config.global_.workers
    return max(1, len(os.sched_getaffinity(0)))


class Arbiter:
    """Owns the workers, the sockets and the generations of one ``trilb serve``."""

    def __init__(
        self,
        config_path: str,
        config: Config,
        workers: int | None = None,
        log_level: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.workers_override = workers
        self.log_level_override = log_level
        self.sockets = SocketSet()
        self.generations: list[Generation] = []
        self.children: dict[int, Child] = {}
        # (generation number, slot) -> when to fork it again
        self.respawn_at: dict[tuple[int, int], float] = {}
        self.failures: dict[int, int] = {}  # slot -> young deaths in a row
        self.stopping = False
        self.stop_deadline: float | None = None
        self.signals: SignalPipe | None = None
        self.pid = os.getpid()
        self._pending = config

    @property
    def current(self) -> Generation:
        """The newest generation that is not draining: the one that should serve."""
        for gen in reversed(self.generations):
            if not gen.draining:
                return gen
        return self.generations[-1]

    def start(self) -> None:
        """Bind every socket, then fork generation 1.

        Raises:
          StartupError: a socket could not be bound; nothing was forked.
        """
        config = self._pending
        slots = resolve_workers(config)
        try:
            tls = server_tls(config)
        except ConfigError as exc:  # (the files changed since the config was checked)
            raise StartupError(str(exc)) from None
        self.sockets.ensure(config, slots)
        self.sockets.ensure_admin(config)
        _raise_fd_limit(config)
        self.signals = SignalPipe()
        self._new_generation(config, slots, tls)

    def run(self) -> int:
        """Supervise until stopped; returns the exit status."""
        assert self.signals is not None
        while not (self.stopping and not self.children):
            # poll(), not select(): descriptors above 1024 are normal with many sockets.
            poller = select.poll()
            poller.register(self.signals.read_fd, select.POLLIN)
            for c in self.children.values():
                if c.ready_fd is not None:
                    poller.register(c.ready_fd, select.POLLIN)
            try:
                events = poller.poll(self._timeout() * 1000)
            except InterruptedError:
                events = []
            for sig in self.signals.read():
                self.handle_signal(sig)
            for fd, _ in events:
                if fd != self.signals.read_fd:
                    self.handle_ready(fd)
            self.reap()
            self.tick(time.monotonic())
        self.sockets.close_all()
        self.signals.close()
        log.info("stopped")
        return 0

    def _timeout(self) -> float:
        now = time.monotonic()
        times = [*self.respawn_at.values()]
        times += [g.deadline for g in self.generations if g.draining]
        if self.stop_deadline is not None:
            times.append(self.stop_deadline)
        return max(0.0, min([now + 1.0, *times]) - now)

    # -- commands ---------------------------------------------------------------

    def handle_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.handle_stop(signal.Signals(sig).name)
        elif sig == signal.SIGHUP:
            self.handle_reload()
        elif sig == signal.SIGUSR1:  # logrotate moved the access log: workers reopen it
            for child in self.children.values():
                if child.slot != CONTROL:
                    _kill(child.pid, signal.SIGUSR1)

    def handle_reload(self) -> bool:
        """Re-read the config; start a new generation only if it is valid."""
        if self.stopping:
            return False
        log.info("reloading %s", self.config_path)
        try:
            config = load_config(
                self.config_path, workers=self.workers_override, log_level=self.log_level_override
            )
            slots = resolve_workers(config)
            tls = server_tls(config)  # certificates re-read from their files
            self.sockets.ensure(config, slots)
            self.sockets.ensure_admin(config)
        except (ConfigError, StartupError) as exc:
            log.error("reload rejected, still serving the previous config: %s", exc)
            return False
        except Exception:
            # Whatever went wrong, a reload must never take the running service down.
            log.exception("reload rejected, still serving the previous config")
            return False
        self._new_generation(config, slots, tls)
        return True

    def handle_stop(self, why: str) -> None:
        if self.stopping:
            log.warning("%s again: killing workers now", why)
            self._signal_all(signal.SIGKILL)
            return
        self.stopping = True
        grace = self.current.config.global_.grace
        log.info("%s: stopping, in-flight connections have %.1fs", why, grace)
        self.respawn_at.clear()
        self._signal_all(signal.SIGTERM)
        self.stop_deadline = time.monotonic() + grace + KILL_MARGIN

    def handle_ready(self, fd: int) -> None:
        """A worker wrote its ready byte, or died before it could (EOF: not ready)."""
        for child in self.children.values():
            if child.ready_fd == fd:
                try:
                    child.ready = os.read(fd, 1) == b"r"
                except OSError:
                    child.ready = False
                os.close(fd)
                child.ready_fd = None
                if child.ready:
                    log.info("%s pid %d ready (generation %d)", _name(child), child.pid,
                             child.generation.number)  # fmt: skip
                return

    def handle_child_exit(self, pid: int, status: int) -> None:
        child = self.children.pop(pid, None)
        if child is None:
            return
        gen = child.generation
        gen.children.pop(child.slot, None)
        if child.ready_fd is not None:
            os.close(child.ready_fd)
        expected = self.stopping or gen.draining
        level = logging.INFO if expected else logging.ERROR
        log.log(level, "%s pid %d %s", _name(child), pid, _describe(status))
        if not expected:
            self._schedule_respawn(gen, child)
        elif gen.draining and not gen.children:
            self._retire(gen)
        elif gen.draining:
            self._end_control(gen)

    def _end_control(self, gen: Generation) -> None:
        """Stop a draining generation's control process once its workers are gone."""
        control = gen.children.get(CONTROL)
        if control is not None and len(gen.children) == 1:
            _kill(control.pid, signal.SIGTERM)

    def _schedule_respawn(self, gen: Generation, child: Child) -> None:
        young = time.monotonic() - child.started < HEALTHY_AFTER
        fails = self.failures.get(child.slot, 0) + 1 if young else 0
        self.failures[child.slot] = fails
        delay = min(BACKOFF_MIN * 2 ** min(fails, 16), BACKOFF_MAX)
        self.respawn_at[(gen.number, child.slot)] = time.monotonic() + delay
        if fails > 1:
            log.warning("%s died young %d times, respawn in %.2fs", _name(child), fails,
                        delay)  # fmt: skip

    # -- the loop's chores ------------------------------------------------------

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.handle_child_exit(pid, status)

    def tick(self, now: float) -> None:
        self._respawn_due(now)
        self._hand_over(now)
        for gen in self.generations:
            if gen.draining and now > gen.deadline:
                for child in gen.children.values():
                    log.warning("%s pid %d past its grace period: killed", _name(child),
                                child.pid)  # fmt: skip
                    _kill(child.pid, signal.SIGKILL)
                gen.deadline = now + KILL_MARGIN
        if self.stop_deadline is not None and now > self.stop_deadline:
            self._signal_all(signal.SIGKILL)
            self.stop_deadline = now + KILL_MARGIN

    def _respawn_due(self, now: float) -> None:
        for key, when in list(self.respawn_at.items()):
            if when > now:
                continue
            del self.respawn_at[key]
            number, slot = key
            for gen in self.generations:
                if gen.number == number and not gen.draining and slot not in gen.children:
                    self._spawn(gen, slot)

    def _hand_over(self, now: float) -> None:
        """Drain older generations once the newest is ready; give up on one that is not."""
        cur = self.current
        older = [g for g in self.generations if g is not cur and not g.draining]
        if not older:
            return
        if cur.ready():
            for gen in older:
                self._drain(gen, now)
        elif now - cur.started > READY_TIMEOUT:
            log.error("generation %d not ready after %.0fs: keeping generation %d",
                      cur.number, READY_TIMEOUT, older[-1].number)  # fmt: skip
            self._drain(cur, now)

    def _drain(self, gen: Generation, now: float) -> None:
        log.info("generation %d: draining %d worker(s)", gen.number, len(gen.children))
        cur = self.current
        if cur.parent is not None and cur.parent[0] is gen and cur.shared and gen.shared:
            cur.shared.replay(gen.shared, gen.config, cur.config, cur.parent[1])
            cur.parent = None
        gen.draining = True
        gen.deadline = now + gen.config.global_.grace + KILL_MARGIN
        for slot, child in gen.children.items():
            if slot != CONTROL:  # (its verdicts serve the draining workers to their end)
                _kill(child.pid, signal.SIGTERM)
            else:  # but the admin API is the new generation's alone from now on
                _kill(child.pid, signal.SIGUSR2)
        self._end_control(gen)
        # Draining workers stop accepting at once: a socket only they used would queue
        # connections nobody accepts, so close it now (Linux resets what is queued).
        self.sockets.retire((g.config, g.slots) for g in self.generations if not g.draining)
        if not gen.children:
            self._retire(gen)

    def _retire(self, gen: Generation) -> None:
        """A drained generation whose processes have all exited."""
        self.generations.remove(gen)
        if gen.shared is not None:
            gen.shared.close()

    def _signal_all(self, sig: int) -> None:
        for pid in self.children:
            _kill(pid, sig)

    # -- forking ----------------------------------------------------------------

    def _new_generation(self, config: Config, slots: int, tls: dict[str, ServerTls]) -> None:
        number = self.generations[-1].number + 1 if self.generations else 1
        gen = Generation(number, config, slots, time.monotonic(), tls)
        if config.admin.requested or any(
            b.health is not None or any(s.dns for s in b.servers) for b in config.backends.values()
        ):
            gen.shared = SharedState(config, slots)  # (before any fork: every child maps it)
            if self.generations and self.current.shared is not None:
                # A reload keeps what the checks and the operator said of the servers
                # it keeps.
                gen.shared.inherit(self.current.shared, self.current.config, config)
                gen.parent = (self.current, self.current.shared.operator())
        self.generations.append(gen)
        log.info("generation %d: starting %d worker(s): %s", number, slots, config.summary())
        for slot in range(slots):
            self._spawn(gen, slot)
        if gen.shared is not None:
            self._spawn(gen, CONTROL)

    def _spawn(self, gen: Generation, slot: int) -> None:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        _flush_logging()
        # Blocked across fork: a signal landing before the child has reset its handlers
        # would otherwise be written to the master's wakeup pipe by the child.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(ready_r)
            os.close(ready_w)
            log.error("cannot fork %s: %s", "the control process" if slot == CONTROL else
                      f"worker {slot + 1}", exc.strerror)  # fmt: skip
            self.respawn_at[(gen.number, slot)] = time.monotonic() + BACKOFF_MAX
            return
        if pid == 0:
            os.close(ready_r)
            os._exit(self._child_main(gen, slot, ready_w, mask))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_w)
        child = Child(pid, slot, gen, time.monotonic(), ready_r)
        self.children[pid] = child
        gen.children[slot] = child

    def _child_main(
        self, gen: Generation, slot: int, ready_fd: int, mask: set[int | signal.Signals]
    ) -> int:
        """Runs in the forked worker; never returns to the master's loop."""
        try:
            assert self.signals is not None
            reset_in_child(self.signals)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for child in self.children.values():
                if child.ready_fd is not None:
                    os.close(child.ready_fd)
            if slot == CONTROL:
                admin = self.sockets.admin if gen.config.admin.requested else None
                self.sockets.close_except([admin] if admin is not None else [])
                assert gen.shared is not None
                from trilb.control.main import run_control  # trio, only after fork

                return run_control(gen.config, gen.shared, ready_fd, self.pid, admin,
                                   gen.number)  # fmt: skip
            listeners = self.sockets.for_slot(gen.config, slot)
            self.sockets.close_except(s for socks in listeners.values() for s in socks)
            from trilb.worker.main import run_worker  # trio is imported only after fork

            return run_worker(gen.config, slot, gen.number, listeners, ready_fd, self.pid,
                              gen.tls, gen.shared)  # fmt: skip
        except BaseException:
            log.exception("%s crashed", "control process" if slot == CONTROL else
                          f"worker {slot + 1}")  # fmt: skip
            return 1
        finally:
            _flush_logging()


def _raise_fd_limit(config: Config) -> None:
    """Raise the soft descriptor limit to the hard one, as HAProxy does, and warn when
    even that is short of what ``maxconn`` allows a worker."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    need = sum(fe.maxconn for fe in config.frontends.values()) * FDS_PER_CONNECTION
    if soft != resource.RLIM_INFINITY and need > soft:
        log.warning("file descriptor limit %d is below what maxconn allows per worker (%d): "
                    "raise it (ulimit -n, LimitNOFILE=) or lower maxconn", soft, need)  # fmt: skip


def _flush_logging() -> None:
    """Flush before fork (a child must not inherit half-written lines) and before _exit."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
