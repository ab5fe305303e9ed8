"""The broker link: paho-mqtt 2.x, MQTT v5, birth/will status, TLS, auth, reconnect with backoff.

paho callbacks run on paho's network thread: they only set state or enqueue (the publisher and
the handlers' owners, e.g. the update manager, do the work on their own threads). Inbound
messages reach the handler registered for their topic filter (:meth:`MqttLink.route`; paho
matches the filters); a message no handler takes is logged and dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.backoff import backoff_delays
from edge_runtime.config.sections import MqttConfig
from edge_runtime.mqttclient import broker_of, connect_properties, make_client
from edge_runtime.publish.topics import Topics
from edge_runtime.scheduling import yield_to_inference
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]  # (topic, payload), called on paho's thread: enqueue only
RetainHandler = Callable[[str, bytes, bool], None]  # (topic, payload, kept by the broker)
# (topic, payload, response topic, correlation data): an MQTT v5 request, on paho's thread too
RequestHandler = Callable[[str, bytes, "str | None", "bytes | None"], None]
_Callback = Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]  # what paho calls
_THROTTLE = Throttle(per_s=60.0, burst=5)  # lines anyone on the broker can cause, per topic


@dataclass(frozen=True, slots=True)
class Ack:
    """A PUBACK (or its QoS 0 equivalent) for one ``mid``; ``ok`` False when reason code >= 0x80."""

    mid: int
    ok: bool
    reason: str


class MqttLink:
    """One paho client per daemon; client id = device id."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        *,
        client_id: str,
        groups: list[str],
        status: Callable[[], dict[str, Any]],
        failure_log: Throttle | None = None,
    ) -> None:
        self.cfg, self.topics, self.groups, self._status = cfg, topics, groups, status
        self.connected = threading.Event()
        self.acks: queue.SimpleQueue[Ack] = queue.SimpleQueue()
        # called on paho's thread after each ack is queued (the publisher decides whether to wake)
        self.on_ack: Callable[[bool], None] | None = None
        self.reconnects = 0
        self.connects = 0
        self.failed_connects = 0  # attempts that ended without a successful CONNACK
        self.last_error: str | None = None
        self._where = f"{cfg.host}:{cfg.port}"
        self._first = True  # connect() the first time, reconnect() after
        self._accepted = False  # this attempt got a successful CONNACK
        self._attempt_error: str | None = None  # why this attempt failed, when known
        self._paho_error: str | None = None  # the first error paho logged in this attempt
        # each reason at most once per window: a broker away for a day is a few lines, not 3,000
        self._failure_log = failure_log or Throttle(per_s=300.0, burst=1, max_keys=32)
        self._routes: set[str] = set()  # filters subscribed at run time (route); kept over reconnects
        self._routes_lock = threading.Lock()
        self._stopping = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._client = make_client(broker_of(cfg), client_id)
        self._configure()

    def _configure(self) -> None:
        c, cfg = self._client, self.cfg
        offline = json.dumps({"state": "offline", "reason": "connection lost", **self._identity()})
        c.will_set(self.topics.status, offline, qos=1, retain=True)
        c.max_inflight_messages_set(cfg.max_inflight)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        # paho's publish() writes to the socket from the calling thread unless it runs its own
        # thread or an event loop is registered; the publisher and this link's thread then both
        # write, and a packet popped by one can overtake a packet popped by the other (seen: seq 2
        # delivered before seq 1). Registering the socket callbacks leaves every write to the
        # mqtt thread: publish() only queues the packet and wakes that thread's select().
        c.on_socket_register_write = _leave_writes_to_the_loop
        c.on_socket_unregister_write = _leave_writes_to_the_loop

    def _identity(self) -> dict[str, Any]:
        # the groups and models too, so `fleet status` and `push --group` know an offline device
        status = self._status()
        return {
            "session": status.get("session"),
            "groups": status.get("groups"),
            "models": status.get("models"),
            "ts": time.time(),
        }

    def start(self) -> None:
        """Connect and keep connecting in the ``mqtt`` thread."""
        self._thread.start()

    def _run(self) -> None:
        """Connect, run the network loop until the link drops, back off (with jitter), repeat.

        Our own loop rather than paho's ``loop_start``: paho swallows the reason a connection
        attempt failed (refused, DNS, a certificate from the wrong CA, a connection closed or left
        silent before CONNACK), and users need to see it. The backoff starts over only after the
        broker accepted a connection: a server that takes TCP connections and says nothing is
        retried ever more slowly, like one that refuses them.
        """
        yield_to_inference()
        delays = backoff_delays(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        while not self._stop.is_set() and not self._stopping:
            if self._attempt():
                delays = backoff_delays(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
            if not self._stopping:
                self._stop.wait(next(delays))

    def _attempt(self) -> bool:
        """One connection attempt, served until the link drops; True when the broker accepted it.

        An attempt that ends without a successful CONNACK is counted and its reason logged and
        shown in health (``_attempt_failed``).
        """
        self._accepted, self._attempt_error, self._paho_error = False, None, None
        # paho formats every line it logs for on_log (a line per packet): listen only until CONNACK
        self._client.on_log = self._on_paho_log
        try:
            if self._first:
                rc = self._client.connect(
                    self.cfg.host,
                    self.cfg.port,
                    self.cfg.keepalive,
                    clean_start=True,
                    properties=connect_properties(broker_of(self.cfg), 0),
                )
                self._first = False
            else:
                rc = self._client.reconnect()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._client.on_log = None
            if not self._stopping:
                self._attempt_failed(f"cannot connect to {self._where}: {exc}")
            return False
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._serve(time.monotonic())
        self._client.on_log = None
        if self._accepted:
            return True
        if not self._stopping:
            self._attempt_failed(self._attempt_error or self._closed_before_connack())
        return False

    def _serve(self, started: float) -> None:
        """Run paho's network loop until the link drops, the link stops, or no CONNACK came
        within ``mqtt.connect_timeout_s`` of ``started``.

        Nothing that arrives may end this thread: an exception out of paho (a callback of ours is
        guarded too, see ``_deliver_to``) is logged and treated as a lost connection.
        """
        timeout = self.cfg.connect_timeout_s
        while not self._stop.is_set():
            if not self._accepted and time.monotonic() - started > timeout:
                self._attempt_error = (
                    f"no CONNACK from {self._where} within {timeout:g} s (mqtt.connect_timeout_s)"
                )
                self._drop()
                return
            try:
                if self._client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS:
                    return
            except Exception:  # the supervisor loop of the link: reconnect rather than die
                _THROTTLE.log(logger, logging.ERROR, "loop", "mqtt: network loop failed; reconnecting")
                logger.debug("mqtt: network loop failure", exc_info=True)
                self.connected.clear()
                if self._accepted:
                    self.last_error = "network loop failed (see the log)"
                else:
                    self._attempt_error = "network loop failed before CONNACK (see the log)"
                self._drop()
                return

    def _drop(self) -> None:
        """Close the connection from this thread (its DISCONNECT goes out at once if it can)."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
            self._client.loop(timeout=0)

    def _closed_before_connack(self) -> str:
        """Why an attempt ended after the TCP connect but before any CONNACK."""
        reason = f"connection to {self._where} closed before CONNACK"
        if self._paho_error:
            reason += f": {self._paho_error}"
        tls = self.cfg.tls
        if tls is not None and tls.cert_file is None:
            reason += " (mqtt.tls.cert_file is not set: does the broker require a client certificate?)"
        return reason

    def _attempt_failed(self, reason: str) -> None:
        """Count a failed attempt, keep its reason for health, log it (each reason at most once per
        ``failure_log`` window, saying how many attempts it held back)."""
        self.failed_connects += 1
        self.last_error = reason
        self._failure_log.log(logger, logging.WARNING, reason, "mqtt: %s", reason)

    # -- paho callbacks: set state / enqueue only ------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:  # logged and counted when the attempt ends (the broker closes it)
            self._attempt_error = f"broker {self._where} refused the connection: {reason}"
            return
        self._accepted = True
        client.on_log = None  # paho's lines are needed only until CONNACK
        self.connects += 1
        logger.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        birth = {"state": "online", **self._status(), "ts": time.time()}
        client.publish(self.topics.status, json.dumps(birth), qos=1, retain=True)
        with self._routes_lock:  # route() changes the set from other threads
            routes = set(self._routes)
        for topic in sorted({*self.topics.inbound(self.groups), *routes}):
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_paho_log(self, _c: mqtt.Client, _u: Any, level: int, line: str) -> None:
        """While connecting: the first error paho logs is why the attempt failed (paho says it
        nowhere else, e.g. a TLS connection the broker closed for want of a client certificate)."""
        if level == mqtt.MQTT_LOG_ERR and self._paho_error is None:
            self._paho_error = line[:300]  # the broker's words can be anything: bounded

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._accepted and self._attempt_error is None and str(reason) == "Keep alive timeout":
            # paho gives up a silent connection after the keepalive, CONNACK or not
            keepalive = self.cfg.keepalive
            self._attempt_error = f"no CONNACK from {self._where} within {keepalive} s (mqtt.keepalive)"
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping:
            self.reconnects += 1
            self.last_error = f"disconnected: {reason}"
            logger.warning("mqtt: disconnected from %s:%d (%s)", self.cfg.host, self.cfg.port, reason)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        failed = reason.is_failure
        self.acks.put(Ack(mid, not failed, str(reason) if failed else ""))
        if self.on_ack is not None:
            self.on_ack(not failed)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        """A message no route takes (paho calls a route's handler instead when a filter matches)."""
        topic = _topic_of(message)
        _THROTTLE.log(  # one key for all topics: the volume stays bounded whatever the names
            logger,
            logging.WARNING,
            "unhandled",
            "inbound: nothing handles %s (see docs/mqtt.md#commands)",
            topic,
        )

    # -- used by the publisher thread ------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        """Hand a message to paho; its mid, or None when not connected."""
        if not self.connected.is_set():
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        if qos == 0:  # no PUBACK will come: delivered as far as QoS 0 goes
            self.acks.put(Ack(info.mid, True, "qos0"))
        return int(info.mid)

    def route(self, topic_filter: str, handler: Handler | None) -> None:
        """Give the messages on ``topic_filter`` to ``handler(topic, payload)`` on paho's thread.

        The handler must only enqueue. A filter that is not one of the daemon's fixed inbound
        topics (subscribed at every connect) is subscribed here, over reconnects too; ``None``
        drops the handler and such a subscription.
        """
        fixed = topic_filter in self.topics.inbound(self.groups)
        if handler is None:
            if not fixed:  # unsubscribe first: chunks still in flight are not "unhandled" then
                with self._routes_lock:
                    self._routes.discard(topic_filter)
                if self.connected.is_set():
                    self._client.unsubscribe(topic_filter)
            self._client.message_callback_remove(topic_filter)
            return
        self._add_route(topic_filter, _deliver_to(handler))

    def route_retained(self, topic_filter: str, handler: RetainHandler) -> None:
        """``route`` for desired-state topics: ``handler(topic, payload, retained)``, where
        ``retained`` says the broker sent a message it kept (at a subscribe: every (re)connect)."""
        self._add_route(topic_filter, _deliver_retained_to(handler))

    def _add_route(self, topic_filter: str, callback: _Callback) -> None:
        """Install ``callback``; a filter that is not a fixed inbound topic is subscribed too."""
        fixed = topic_filter in self.topics.inbound(self.groups)
        self._client.message_callback_add(topic_filter, callback)
        if not fixed:
            with self._routes_lock:
                self._routes.add(topic_filter)
            if self.connected.is_set():
                self._client.subscribe(topic_filter, qos=1)

    def route_requests(self, topic_filter: str, handler: RequestHandler) -> None:
        """Like :meth:`route`, for MQTT v5 requests: ``handler`` also gets the message's response
        topic and correlation data (None when absent). Only enqueue there too."""
        self._add_route(topic_filter, _deliver_request_to(handler))

    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> bool:
        """Answer a request on its response topic (QoS 1, not retained, no response topic of its
        own, so two devices cannot answer each other forever); False when not connected."""
        if not self.connected.is_set():
            return False
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation is not None:
            props.CorrelationData = correlation
        info = self._client.publish(topic, payload, qos=1, retain=False, properties=props)
        return info.rc == mqtt.MQTT_ERR_SUCCESS  # its PUBACK matches no outbox row: ignored there

    def rebirth(self) -> bool:
        """Publish the retained online status (the birth message) again; False when not connected."""
        if not self.connected.is_set():
            return False
        birth = {"state": "online", **self._status(), "ts": time.time()}
        info = self._client.publish(self.topics.status, json.dumps(birth), qos=1, retain=True)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self, reason: str = "shutdown", timeout: float = 3.0) -> None:
        """Publish the retained offline status, disconnect cleanly (no will), stop the thread."""
        self._stopping = True
        if self.connected.is_set():
            offline = {"state": "offline", "reason": reason, **self._identity()}
            info = self._client.publish(self.topics.status, json.dumps(offline), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                logger.warning("mqtt: could not publish the offline status")
            self._client.disconnect()  # sent by the mqtt thread's loop; a clean DISCONNECT: no will
            if self._thread.is_alive():
                self._thread.join(timeout)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def _topic_of(message: mqtt.MQTTMessage) -> str:
    """The message's topic; anyone may publish, so a name that is not UTF-8 is shown escaped."""
    try:
        return str(message.topic)
    except UnicodeDecodeError:
        return repr(bytes(message._topic))


def _deliver_to(handler: Handler) -> _Callback:
    """paho's callback for a route: the handler gets (topic, payload)."""
    return _guarded(lambda m: handler(m.topic, bytes(m.payload)))


def _deliver_retained_to(handler: RetainHandler) -> _Callback:
    """paho's callback for a desired-state route: (topic, payload, kept by the broker)."""
    return _guarded(lambda m: handler(m.topic, bytes(m.payload), bool(m.retain)))


def _guarded(deliver: Callable[[mqtt.MQTTMessage], None]) -> _Callback:
    """Nothing a handler raises reaches paho (which would re-raise it out of the network loop)."""

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            deliver(message)
        except Exception:  # hostile input must never end the link
            topic = _topic_of(message)
            _THROTTLE.log(logger, logging.ERROR, "handler", "inbound: a message on %s failed", topic)
            logger.debug("inbound: handler failure on %s", topic, exc_info=True)

    return on_message


def _deliver_request_to(handler: RequestHandler) -> _Callback:
    """paho's callback for a request route: (topic, payload, response topic, correlation data)."""

    def deliver(message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        response = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        handler(
            message.topic,
            bytes(message.payload),
            response if isinstance(response, str) else None,
            bytes(correlation) if isinstance(correlation, (bytes, bytearray)) else None,
        )

    return _guarded(deliver)


def _leave_writes_to_the_loop(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """The mqtt thread's loop writes whatever is queued; nothing to register elsewhere."""
