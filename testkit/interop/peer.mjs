#!/usr/bin/env node
// Line-oriented JSON XMPP peer built on @xmpp/client, for interoperability tests.
//
//   node peer.mjs --service ws://127.0.0.1:PORT/xmpp-websocket --domain localhost \
//                 --username carol --password secret [--register] [--resource R]
//                 [--timeout MS] [--mechanism SCRAM-SHA-1|PLAIN] [--debug] [--no-receipts]
//
// stdout: one JSON object per line (events). stderr: diagnostics (raw XML with --debug).
// stdin:  one JSON command per line: {"cmd":"send",...} | {"cmd":"raw","xml":"..."} |
//         {"cmd":"burst",...} | {"cmd":"quit"}. EOF on stdin = quit.
// See README.md for the full protocol.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";
import WS from "ws";
import { client, xml } from "@xmpp/client";

// @xmpp/websocket 0.14 does `new WebSocket(url, ["xmpp"])` on the *global* at connect
// time. Node 20 has no global WebSocket (without --experimental-websocket), so install
// the `ws` implementation. Always use `ws` so behaviour is identical on every Node version.
globalThis.WebSocket = WS;

const NS_REGISTER = "jabber:iq:register";
const NS_RECEIPTS = "urn:xmpp:receipts";
const NS_SID = "urn:xmpp:sid:0";
const NS_MARKERS = "urn:xmpp:chat-markers:0";

// ---------------------------------------------------------------------------- output
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}
function log(...args) {
  process.stderr.write(`[peer ${opts?.username ?? "?"}] ${args.join(" ")}\n`);
}
let exiting = false;
function exit(code) {
  if (exiting) return;
  exiting = true;
  // make sure everything queued on stdout is flushed before exiting
  process.stdout.write("", () => process.exit(code));
  setTimeout(() => process.exit(code), 2000).unref();
}
function fatal(message, code = 1) {
  if (exiting) return;
  emit({ event: "error", message: String(message), fatal: true });
  exit(code);
}
function errMessage(err) {
  if (!err) return "unknown error";
  // WebSocket CloseEvent (from `ws`), passed as the reason of a dirty disconnect
  if (typeof err.code === "number" && "wasClean" in err) {
    return `websocket closed, code ${err.code}${err.reason ? ` (${err.reason})` : ""}`;
  }
  // SASLError / StanzaError carry a condition and optional text
  const parts = [err.name && err.name !== "Error" ? err.name : null, err.condition, err.text || err.message];
  return parts.filter(Boolean).join(": ") || String(err);
}

// ---------------------------------------------------------------------------- args
let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      service: { type: "string" },
      domain: { type: "string" },
      username: { type: "string" },
      password: { type: "string" },
      resource: { type: "string" },
      register: { type: "boolean", default: false },
      timeout: { type: "string", default: "20000" },
      mechanism: { type: "string" },
      debug: { type: "boolean", default: false },
      "no-receipts": { type: "boolean", default: false },
    },
    strict: true,
  }));
} catch (err) {
  fatal(`bad arguments: ${err.message}`, 64);
}
if (!exiting) {
  for (const k of ["service", "domain", "username", "password"]) {
    if (!opts[k]) fatal(`missing required --${k}`, 64);
  }
}

// ---------------------------------------------------------------------------- client
const startedAt = performance.now();
let online = false;
let quitting = false;
let registered = false;

const xmpp = exiting
  ? null
  : client({
      service: opts.service,
      domain: opts.domain,
      username: opts.username,
      password: opts.password,
      resource: opts.resource,
      credentials: onAuthenticate,
    });

// A test peer must not silently reconnect: a dropped connection is reported and is fatal.
xmpp?.reconnect.stop();

// @xmpp/client 0.14 sometimes acknowledges more XEP-0198 stanzas than the server sent (seen
// about once in ten runs against Prosody 0.12, which then ends the stream with "Client
// acknowledged more stanzas than sent by server"). These tests are about messages, not about
// this library's stream management, so the peer never enables it: refusing to send <enable/>
// makes the library carry on without it.
if (xmpp) {
  const send = xmpp.send.bind(xmpp);
  xmpp.send = (element) =>
    element?.is?.("enable", "urn:xmpp:sm:3") ? Promise.reject(new Error("XEP-0198 is off in the test peer")) : send(element);
}

// XEP-0077 in-band registration, done on the same (pre-auth) stream right before SASL.
// @xmpp/client has no helper for it; Prosody answers jabber:iq:register iqs from
// unauthenticated c2s sessions (mod_register_ibr) and the stream then continues to SASL.
async function register() {
  const iq = xml(
    "iq",
    { type: "set", id: `reg-${randomUUID()}` },
    xml("query", { xmlns: NS_REGISTER }, xml("username", {}, opts.username), xml("password", {}, opts.password)),
  );
  try {
    await xmpp.iqCaller.request(iq, 10_000);
    emit({ event: "registered", jid: `${opts.username}@${opts.domain}`, existed: false });
  } catch (err) {
    if (err.condition === "conflict") {
      // account already exists: not fatal, authentication will tell whether the password matches
      emit({ event: "registered", jid: `${opts.username}@${opts.domain}`, existed: true });
    } else {
      throw new Error(`registration failed: ${errMessage(err)}`);
    }
  }
}

// Called by @xmpp/sasl (and @xmpp/sasl2) when the server offers SASL mechanisms.
async function onAuthenticate(authenticate, mechanisms, _fast, entity) {
  if (opts.register && !registered) {
    registered = true;
    await register();
  }
  let mechanism;
  if (opts.mechanism) {
    if (!mechanisms.includes(opts.mechanism)) {
      throw new Error(`SASL mechanism ${opts.mechanism} not offered (offered: ${mechanisms.join(", ")})`);
    }
    mechanism = opts.mechanism;
  } else {
    // same policy as @xmpp/client's default: first supported mechanism (SCRAM-SHA-1 before
    // PLAIN) on a secure transport (ws:// to loopback counts as secure), never PLAIN otherwise
    mechanism = entity.isSecure() ? mechanisms[0] : mechanisms.find((m) => m !== "PLAIN");
  }
  if (!mechanism) throw new Error(`no usable SASL mechanism (offered: ${mechanisms.join(", ")})`);
  if (opts.debug) log(`SASL mechanisms ${mechanisms.join(",")} -> ${mechanism}`);
  await authenticate({ username: opts.username, password: opts.password }, mechanism);
}

if (xmpp) {
  if (opts.debug) {
    xmpp.on("status", (s) => log(`status ${s}`));
    // @xmpp 0.14 emits parsed elements ("element") and sent elements ("send"); no raw data events
    xmpp.on("element", (el) => log(`IN  ${el.toString()}`));
    xmpp.on("send", (el) => log(`OUT ${el.toString()}`));
  }

  xmpp.on("error", (err) => {
    if (quitting) return;
    if (!online) return; // before online, start() rejects with the same error and we report it there
    emit({ event: "error", message: errMessage(err) });
  });

  xmpp.on("disconnect", ({ clean, reason } = {}) => {
    if (quitting || !online) return;
    fatal(`disconnected from server (${clean ? "clean" : "unclean"}${reason ? `: ${errMessage(reason)}` : ""})`, 3);
  });

  xmpp.on("online", async (address) => {
    try {
      await xmpp.send(xml("presence"));
    } catch (err) {
      fatal(`initial presence failed: ${errMessage(err)}`);
      return;
    }
    online = true;
    emit({ event: "online", jid: address.toString(), ms: Math.round(performance.now() - startedAt) });
    startStdin();
  });

  xmpp.on("stanza", (stanza) => {
    if (stanza.is("presence")) {
      // MUC status codes tell, e.g., that a join went through (110: this is our own presence).
      const x = stanza.getChild("x", "http://jabber.org/protocol/muc#user");
      const codes = x ? x.getChildren("status").map((s) => s.attrs.code) : [];
      emit({ event: "presence", from: stanza.attrs.from ?? null, type: stanza.attrs.type ?? null, codes });
      return;
    }
    if (!stanza.is("message")) return;
    const from = stanza.attrs.from ?? null;
    const id = stanza.attrs.id ?? null;
    const type = stanza.attrs.type ?? "normal";

    if (type === "error") {
      const error = stanza.getChild("error");
      const condition = error?.children.find((c) => typeof c !== "string" && c.attrs?.xmlns === "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name !== "text")?.name;
      emit({ event: "message_error", from, id, condition: condition ?? null });
      return;
    }

    const received = stanza.getChild("received", NS_RECEIPTS);
    if (received) emit({ event: "receipt", from, id: received.attrs.id ?? null });
    // XEP-0333 chat markers
    for (const kind of ["received", "displayed", "acknowledged"]) {
      const marker = stanza.getChild(kind, NS_MARKERS);
      if (marker) emit({ event: "marker", kind, from, type, id: marker.attrs.id ?? null });
    }

    const body = stanza.getChildText("body");
    if (body !== null) {
      const originId = stanza.getChild("origin-id", NS_SID)?.attrs.id ?? null;
      // XEP-0203 delay stamp (e.g. offline storage replay), null for live messages
      const delay = stanza.getChild("delay", "urn:xmpp:delay")?.attrs.stamp ?? null;
      const stanzaId = stanza.getChild("stanza-id", NS_SID)?.attrs.id ?? null;
      const markable = stanza.getChild("markable", NS_MARKERS) !== undefined;
      emit({ event: "message", from, type, id, body, origin_id: originId, delay, stanza_id: stanzaId, markable });
    }

    // XEP-0184: acknowledge when asked (only for messages with an id, never for errors), unless
    // told not to (--no-receipts)
    if (!opts["no-receipts"] && stanza.getChild("request", NS_RECEIPTS) && id && from) {
      const ack = xml(
        "message",
        { to: from, id: `rcpt-${randomUUID()}`, ...(type === "chat" ? { type: "chat" } : {}) },
        xml("received", { xmlns: NS_RECEIPTS, id }),
      );
      xmpp.send(ack).then(
        () => emit({ event: "receipt_sent", to: from, id }),
        (err) => emit({ event: "error", message: `sending receipt failed: ${errMessage(err)}` }),
      );
    }
  });

  const timer = setTimeout(() => {
    if (!online) fatal(`not online after ${opts.timeout} ms`, 4);
  }, Number(opts.timeout) || 20000);
  timer.unref();

  xmpp.start().catch((err) => fatal(errMessage(err), 2));

  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => quit(sig === "SIGINT" ? 130 : 143));
}

// ---------------------------------------------------------------------------- stdin
let queue = Promise.resolve();
function startStdin() {
  const rl = createInterface({ input: process.stdin, terminal: false });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    queue = queue.then(() => handle(line)).catch((err) => emit({ event: "error", message: errMessage(err) }));
  });
  // EOF on stdin (parent test dropped the pipe) behaves like {"cmd":"quit"}
  rl.on("close", () => {
    queue = queue.then(() => quit(0));
  });
}

async function handle(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    emit({ event: "error", message: `invalid JSON command: ${line}` });
    return;
  }
  switch (cmd.cmd) {
    case "send": {
      if (!cmd.to || typeof cmd.body !== "string") {
        emit({ event: "error", message: "send needs \"to\" and \"body\"" });
        return;
      }
      const id = cmd.id ?? `peer-${randomUUID()}`;
      const children = [xml("body", {}, cmd.body)];
      // origin-id (XEP-0359) defaults to the message id; "origin_id": null omits it
      const originId = cmd.origin_id === undefined ? id : cmd.origin_id;
      if (originId !== null) children.push(xml("origin-id", { xmlns: NS_SID, id: originId }));
      if (cmd.receipt) children.push(xml("request", { xmlns: NS_RECEIPTS }));
      await xmpp.send(xml("message", { to: cmd.to, type: cmd.type ?? "chat", id }, ...children));
      emit({ event: "sent", id });
      return;
    }
    case "burst": {
      // {"cmd":"burst","to":"bob@localhost","count":10000,"prefix":"m"}: sends `count` chat
      // messages as fast as the library allows, then a ping: its answer means the server has
      // handled every message before it. Prints {"event":"burst_done","count":N,"ms":T}.
      if (!cmd.to || !(cmd.count > 0)) {
        emit({ event: "error", message: "burst needs \"to\" and a positive \"count\"" });
        return;
      }
      const t0 = performance.now();
      const prefix = cmd.prefix ?? "m";
      for (let i = 0; i < cmd.count; i++) {
        const id = `${prefix}-${i}`;
        await xmpp.send(xml("message", { to: cmd.to, type: "chat", id }, xml("body", {}, `${prefix} ${i}`), xml("origin-id", { xmlns: NS_SID, id })));
      }
      await xmpp.iqCaller.request(xml("iq", { type: "get", to: opts.domain }, xml("ping", { xmlns: "urn:xmpp:ping" })), 120_000);
      emit({ event: "burst_done", count: cmd.count, ms: Math.round(performance.now() - t0) });
      return;
    }
    case "raw": {
      // {"cmd":"raw","xml":"<message .../>"}: any stanza, written as it is (one WebSocket frame),
      // to act as clients that do not behave like this library (no id, reused ids, ...).
      if (typeof cmd.xml !== "string") {
        emit({ event: "error", message: "raw needs \"xml\"" });
        return;
      }
      await xmpp.write(cmd.xml);
      emit({ event: "sent_raw" });
      return;
    }
    case "quit":
      await quit(0);
      return;
    default:
      emit({ event: "error", message: `unknown command: ${cmd.cmd}` });
  }
}

async function quit(code) {
  if (quitting) return;
  quitting = true;
  try {
    if (xmpp && xmpp.status !== "offline") {
      await Promise.race([
        xmpp.stop(),
        new Promise((_, rej) => setTimeout(() => rej(new Error("timeout closing stream")), 5000).unref()),
      ]);
    }
    emit({ event: "closed" });
    exit(code);
  } catch (err) {
    emit({ event: "error", message: `clean close failed: ${errMessage(err)}` });
    exit(code || 1);
  }
}
