// machat web client: the JSON format of docs/PROTOCOL.md over a WebSocket at /mychat.
// No framework, no build step. Text from other people is only ever inserted as text
// (textContent / text nodes), never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const COMMANDS = [
    "/nick", "/list", "/who", "/rooms", "/join", "/msg", "/group", "/history", "/stats",
    "/help", "/quit", "/query", "/close",
  ];
  const MAX_LINES = 2000; // per conversation kept on the page
  const HISTORY_ON_JOIN = 50;
  const BACKOFF = [1, 2, 4, 8, 15, 30]; // seconds between reconnection attempts
  const ROOMS_REFRESH = 30000;

  // -- state ----------------------------------------------------------------------
  const state = {
    name: "", // who we are (the server's spelling, after /nick too)
    room: "", // the room we are in
    password: "",
    auth: "", // the password of a registered name (the handshake's "auth")
    ws: null,
    connected: false, // welcome received on the current socket
    everConnected: false,
    leaving: false, // the user quit: do not reconnect
    attempt: 0,
    retryTimer: 0,
    roomsTimer: 0,
    quietReplies: { members: 0, rooms: 0 }, // replies to our own automatic requests
    pendingPrivate: [], // {to, text} sent, waiting for "sent" or an error
    buffers: new Map(), // key -> Buffer
    active: null, // key of the buffer on screen
    rooms: [], // [{room, members}] from /rooms
    members: [], // names in our room
    inputHistory: [],
    historyPos: -1,
    draft: "",
    completion: null, // {start, end, matches, index}
    notify: localStorage.getItem("machat.notify") === "1",
    away: document.hidden || !document.hasFocus(),
  };

  const fold = (s) => s.toLowerCase();
  const roomKey = (room) => "room:" + fold(room);
  const queryKey = (name) => "query:" + fold(name);

  // -- small DOM helpers (text only) ------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function nickColour(name) {
    // FNV-1a over the case-folded name: the same name always gets the same colour.
    let h = 0x811c9dc5;
    for (const ch of fold(name)) {
      h ^= ch.codePointAt(0);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return "c" + (h % 12);
  }

  function nickNode(name) {
    return el("span", "nick " + nickColour(name), name);
  }

  const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

  // The text as nodes: plain text nodes, and links for http(s) URLs.
  function textNodes(text) {
    const out = [];
    let last = 0;
    for (const match of text.matchAll(URL_RE)) {
      if (match.index > last) out.push(document.createTextNode(text.slice(last, match.index)));
      const a = el("a", "", match[0]);
      a.href = match[0];
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      out.push(a);
      last = match.index + match[0].length;
    }
    if (last < text.length) out.push(document.createTextNode(text.slice(last)));
    return out;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(undefined, {
    weekday: "long", year: "numeric", month: "long", day: "numeric",
  });
  const fullFormat = new Intl.DateTimeFormat(undefined, {
    dateStyle: "full", timeStyle: "medium",
  });
  const dayOf = (date) => date.getFullYear() * 10000 + date.getMonth() * 100 + date.getDate();

  // -- conversations ----------------------------------------------------------------
  class Buffer {
    constructor(key, label, kind) {
      this.key = key;
      this.label = label;
      this.kind = kind; // "room" | "query" | "server"
      this.node = el("div", "buffer");
      this.node.hidden = true;
      this.node.dataset.key = key;
      this.lastDay = null;
      this.lastId = 0; // the id of the last room message received: resume from it
      this.seen = new Set(); // "id:ts" of the messages shown: each exactly once
      this.unread = 0;
      this.mentions = 0;
      this.marker = null; // the "new since" line
      $("log").append(this.node);
    }

    add(line, date, { counts = false, mention = false } = {}) {
      date = date || new Date();
      const day = dayOf(date);
      if (day !== this.lastDay) {
        this.node.append(el("div", "day", dayFormat.format(date)));
        this.lastDay = day;
      }
      const watching = state.active === this.key && !state.away;
      if (counts && !watching) {
        if (!this.marker) {
          this.marker = el("div", "marker", "new since " + timeFormat.format(date));
          this.marker.setAttribute("role", "separator");
          this.node.append(this.marker);
        }
        this.unread += 1;
        if (mention) this.mentions += 1;
      }
      const stick = isAtBottom();
      this.node.append(line);
      while (this.node.childElementCount > MAX_LINES) this.node.firstElementChild.remove();
      if (state.active === this.key) {
        if (stick) scrollToBottom();
        else $("jump").hidden = false;
      }
      renderLists();
      updateTitle();
    }

    read() {
      this.unread = 0;
      this.mentions = 0;
    }
  }

  function buffer(key, label, kind) {
    let b = state.buffers.get(key);
    if (!b) {
      b = new Buffer(key, label, kind);
      state.buffers.set(key, b);
    } else if (label && b.label !== label && kind !== "room") {
      b.label = label;
    }
    return b;
  }

  const serverBuffer = () => buffer("server", "server", "server");
  const roomBuffer = (room) => buffer(roomKey(room || state.room || "lounge"), room, "room");
  const activeBuffer = () => state.buffers.get(state.active) || serverBuffer();

  function show(key) {
    const previous = state.buffers.get(state.active);
    if (previous && previous.key !== key) dropMarker(previous);
    state.active = key;
    for (const b of state.buffers.values()) b.node.hidden = b.key !== key;
    const b = activeBuffer();
    b.read();
    $("buffer-name").textContent = b.label || "machat";
    $("input").placeholder =
      b.kind === "query" ? "Message " + b.label : b.kind === "room" ? "Message " + b.label : "";
    scrollToBottom();
    renderLists();
    updateTitle();
    closeDrawers();
  }

  function dropMarker(b) {
    if (b.marker && !b.unread) {
      b.marker.remove();
      b.marker = null;
    }
  }

  function isAtBottom() {
    const log = $("log");
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function scrollToBottom() {
    const log = $("log");
    log.scrollTop = log.scrollHeight;
    $("jump").hidden = true;
  }

  // -- lines ------------------------------------------------------------------------
  function lineNode(kind, date, parts) {
    const line = el("div", "line " + kind);
    const time = el("time", "", timeFormat.format(date));
    time.dateTime = date.toISOString();
    time.title = fullFormat.format(date);
    const body = el("span", "body");
    body.append(...parts);
    line.append(time, body);
    return line;
  }

  function mentions(text) {
    if (!state.name) return false;
    const escaped = state.name.replace(/[-\\^$*+?.()|[\]{}]/g, "\\$&");
    return new RegExp("(^|[^A-Za-z0-9_-])" + escaped + "($|[^A-Za-z0-9_-])", "i").test(text);
  }

  function say(b, from, text, date, { tag = "", id = 0, notifyAlways = false } = {}) {
    const own = fold(from) === fold(state.name);
    const mention = !own && mentions(text);
    const parts = [];
    if (tag) parts.push(el("span", "tag", tag + " "));
    parts.push(nickNode(from), document.createTextNode(": "), ...textNodes(text));
    const line = lineNode("msg" + (own ? " own" : "") + (mention ? " mention" : ""), date, parts);
    if (id) line.dataset.id = String(id);
    line.dataset.from = from;
    b.add(line, date, { counts: !own, mention });
    if (!own && (mention || notifyAlways)) notify(from, text, b);
  }

  function notice(b, text, kind = "info", date) {
    b.add(lineNode(kind, date || new Date(), [document.createTextNode(text)]), date);
  }

  function quiet(b, parts, date) {
    b.add(lineNode("quiet", date || new Date(), parts), date);
  }

  // -- notifications and the title --------------------------------------------------
  function notify(from, text, b) {
    if (!state.notify || !("Notification" in window)) return;
    if (Notification.permission !== "granted") return;
    if (!state.away && state.active === b.key) return;
    const n = new Notification(b.kind === "query" ? from : from + " in " + b.label, {
      body: text.slice(0, 200),
      tag: "machat-" + b.key,
    });
    n.onclick = () => {
      window.focus();
      show(b.key);
      n.close();
    };
  }

  function updateTitle() {
    let unread = 0;
    let mentioned = 0;
    for (const b of state.buffers.values()) {
      unread += b.unread;
      mentioned += b.mentions;
    }
    const b = activeBuffer();
    const where = b.label && b.kind !== "server" ? b.label + " - machat" : "machat";
    document.title = (unread ? "(" + unread + (mentioned ? "!" : "") + ") " : "") + where;
  }

  function setAway(away) {
    if (away === state.away) return;
    state.away = away;
    const b = activeBuffer();
    if (!away) {
      b.read();
      updateTitle();
      renderLists();
    } else {
      dropMarker(b);
    }
  }

  // -- side panels ------------------------------------------------------------------
  function renderLists() {
    const rooms = $("rooms");
    const list = [];
    const seen = new Set();
    const add = (room, count) => {
      if (seen.has(fold(room))) return;
      seen.add(fold(room));
      list.push([room, count]);
    };
    if (state.room) add(state.room, state.members.length);
    for (const r of state.rooms) add(r.room, r.members);
    for (const b of state.buffers.values()) if (b.kind === "room") add(b.label, null);
    list.sort((a, b) => fold(a[0]).localeCompare(fold(b[0])));
    rooms.replaceChildren(
      ...list.map(([room, count]) => {
        const b = state.buffers.get(roomKey(room));
        const li = el("li");
        const button = el("button", "", "");
        button.type = "button";
        button.append(el("span", "", room));
        const badge = b && b.unread
          ? el("span", "count unread", String(b.unread))
          : el("span", "count", count === null || count === undefined ? "" : String(count));
        button.append(badge);
        const current = state.active === roomKey(room);
        button.setAttribute("aria-current", current ? "true" : "false");
        button.addEventListener("click", () => switchRoom(room));
        li.append(button);
        return li;
      }),
    );
    const queries = $("queries");
    queries.replaceChildren(
      ...[...state.buffers.values()]
        .filter((b) => b.kind === "query")
        .map((b) => {
          const li = el("li");
          const button = el("button", "", "");
          button.type = "button";
          button.append(nickNode(b.label));
          if (b.unread) button.append(el("span", "count unread", String(b.unread)));
          button.setAttribute("aria-current", state.active === b.key ? "true" : "false");
          button.addEventListener("click", () => show(b.key));
          li.append(button);
          return li;
        }),
    );
    const server = state.buffers.get("server");
    if (server && server.node.childElementCount) {
      const li = el("li");
      const button = el("button", "", "server");
      button.type = "button";
      button.setAttribute("aria-current", state.active === "server" ? "true" : "false");
      button.addEventListener("click", () => show("server"));
      li.append(button);
      queries.append(li);
    }
  }

  function renderMembers() {
    $("members-title").textContent = "Members (" + state.members.length + ")";
    $("member-list").replaceChildren(
      ...state.members.map((name) => {
        const li = el("li");
        const button = el("button", "", "");
        button.type = "button";
        button.title = "Private conversation with " + name;
        button.append(nickNode(name));
        button.addEventListener("click", () => openQuery(name));
        li.append(button);
        return li;
      }),
    );
    renderLists();
  }

  function setMembers(names) {
    state.members = [...names].sort((a, b) => fold(a).localeCompare(fold(b)));
    renderMembers();
  }

  function openQuery(name) {
    const b = buffer(queryKey(name), name, "query");
    show(b.key);
    $("input").focus();
  }

  function switchRoom(room) {
    if (fold(room) === fold(state.room)) {
      show(roomKey(room));
      return;
    }
    send("/join " + room);
  }

  function closeDrawers() {
    $("app").classList.remove("show-sidebar", "show-members");
    $("toggle-sidebar").setAttribute("aria-expanded", "false");
    $("toggle-members").setAttribute("aria-expanded", "false");
  }

  // -- the connection ----------------------------------------------------------------
  function status(text, bad = false) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("bad", bad);
  }

  function setConnected(on) {
    state.connected = on;
    $("input").disabled = !on;
    $("send").disabled = !on;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    $("reconnect-now").hidden = true;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/mychat");
    state.ws = ws;
    status(state.everConnected ? "reconnecting..." : "connecting...");
    ws.onopen = () => {
      if (ws !== state.ws) return;
      const handshake = { name: state.name, room: state.room, format: "json" };
      if (state.password) handshake.password = state.password;
      if (state.auth) handshake.auth = state.auth;
      const b = state.buffers.get(roomKey(state.room));
      if (b && b.lastId) handshake.since = b.lastId;
      else handshake.history = HISTORY_ON_JOIN;
      ws.send(JSON.stringify(handshake));
    };
    ws.onmessage = (event) => {
      if (ws !== state.ws || typeof event.data !== "string") return;
      for (const raw of event.data.split("\n")) {
        if (!raw.trim()) continue;
        let data;
        try {
          data = JSON.parse(raw);
        } catch {
          notice(activeBuffer(), raw); // a plain line (the server's refusals before JSON)
          continue;
        }
        if (data && typeof data === "object") handle(data);
      }
    };
    ws.onclose = (event) => {
      if (ws !== state.ws) return;
      state.ws = null;
      const was = state.connected;
      setConnected(false);
      clearInterval(state.roomsTimer);
      if (state.leaving) {
        // The user quit, or the server refused us (the join form says why).
        if (!$("app").classList.contains("joining")) backToJoin("");
        return;
      }
      if (!state.everConnected) {
        // Never got in: the server refused us (the reason was shown) or is not there.
        if (!$("join-error").textContent) {
          backToJoin("Cannot reach the server" + (event.code ? " (" + event.code + ")" : ""));
        }
        return;
      }
      if (was) notice(activeBuffer(), "Disconnected from the server.", "error");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = BACKOFF[Math.min(state.attempt, BACKOFF.length - 1)];
    state.attempt += 1;
    const jitter = 0.8 + Math.random() * 0.4;
    const until = Date.now() + delay * jitter * 1000;
    $("reconnect-now").hidden = false;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      status("Disconnected: reconnecting in " + left + " s", true);
      if (left <= 0) connect();
      else state.retryTimer = setTimeout(tick, 1000);
    };
    clearTimeout(state.retryTimer);
    tick();
  }

  function send(line) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.connected) return false;
    state.ws.send(line);
    return true;
  }

  function sendQuiet(command, kind) {
    if (send(command)) state.quietReplies[kind] += 1;
  }

  function backToJoin(error) {
    const message = $("join-error");
    message.textContent = error;
    message.hidden = !error;
    $("app").classList.add("joining");
    $("join-button").disabled = false;
    status("");
    $("join-name").focus();
  }

  // -- events from the server ---------------------------------------------------------
  function handle(e) {
    const date = typeof e.ts === "number" ? new Date(e.ts * 1000) : new Date();
    switch (e.type) {
      case "welcome": {
        const reconnected = state.everConnected;
        state.name = e.name;
        state.room = e.room;
        state.everConnected = true;
        state.attempt = 0;
        setConnected(true);
        $("app").classList.remove("joining");
        localStorage.setItem("machat.name", e.name);
        localStorage.setItem("machat.room", e.room);
        status("connected as " + e.name);
        const b = roomBuffer(e.room);
        if (reconnected) notice(b, "Reconnected.");
        else notice(b, "Welcome " + e.name + "! Type /help for commands.");
        if (e.motd) notice(b, e.motd);
        if (state.active === null || state.active === "server" || !state.buffers.has(state.active))
          show(b.key);
        clearInterval(state.roomsTimer);
        state.roomsTimer = setInterval(() => sendQuiet("/rooms", "rooms"), ROOMS_REFRESH);
        $("input").focus();
        break;
      }
      case "message": {
        const b = roomBuffer(e.room);
        if (typeof e.id === "number") {
          // id and time together: a restarted server numbers its messages anew.
          const key = e.id + ":" + e.ts;
          if (b.seen.has(key)) break; // shown already (a replay after reconnecting)
          b.seen.add(key);
          if (b.seen.size > 4 * MAX_LINES) b.seen.delete(b.seen.values().next().value);
          b.lastId = e.id;
        }
        say(b, String(e.from), String(e.text), date, { id: e.id });
        break;
      }
      case "history": {
        const b = roomBuffer(e.room);
        if (e.complete === false) {
          notice(b, "Some messages from while you were away are no longer kept.", "error");
        }
        for (const m of e.messages || []) handle(m);
        break;
      }
      case "join": {
        const b = roomBuffer(e.room);
        if (fold(e.name) === fold(state.name)) {
          const moved = fold(e.room) !== fold(state.room);
          state.room = e.room;
          b.label = e.room;
          localStorage.setItem("machat.room", e.room);
          if (moved || state.active !== b.key) show(b.key);
          sendQuiet("/who", "members");
          sendQuiet("/rooms", "rooms");
        } else if (!state.members.some((n) => fold(n) === fold(e.name))) {
          setMembers([...state.members, e.name]);
        }
        quiet(b, [el("span", "", "\u2192 "), nickNode(e.name), document.createTextNode(" joined")]);
        break;
      }
      case "leave": {
        const b = roomBuffer(e.room);
        if (fold(e.name) !== fold(state.name)) {
          setMembers(state.members.filter((n) => fold(n) !== fold(e.name)));
        }
        const why = e.reason ? " (" + e.reason + ")" : "";
        quiet(b, [el("span", "", "\u2190 "), nickNode(e.name), document.createTextNode(" left" + why)]);
        break;
      }
      case "nick": {
        if (fold(e.old) === fold(state.name)) {
          state.name = e.new;
          localStorage.setItem("machat.name", e.new);
          status("connected as " + e.new);
        }
        setMembers(state.members.map((n) => (fold(n) === fold(e.old) ? e.new : n)));
        const q = state.buffers.get(queryKey(e.old));
        const parts = [nickNode(e.old), document.createTextNode(" is now known as "), nickNode(e.new)];
        quiet(roomBuffer(state.room), parts);
        if (q) quiet(q, parts.map((p) => p.cloneNode(true)));
        break;
      }
      case "private": {
        const b = buffer(queryKey(e.from), e.from, "query");
        say(b, String(e.from), String(e.text), date, { notifyAlways: true });
        break;
      }
      case "group": {
        const b = buffer(queryKey(e.group), e.group, "query");
        say(b, String(e.from), String(e.text), date);
        break;
      }
      case "broadcast":
        say(roomBuffer(state.room), String(e.from), String(e.text), date, { tag: "[all]" });
        break;
      case "sent": {
        const sent = state.pendingPrivate.shift();
        if (sent) {
          for (const to of e.to || [sent.to]) {
            say(buffer(queryKey(to), to, "query"), state.name, sent.text, date);
          }
        } else {
          notice(activeBuffer(), "sent to " + (e.to || []).join(", "));
        }
        break;
      }
      case "members": {
        if (String(e.room).startsWith("#")) {
          notice(activeBuffer(), e.room + ": " + (e.names || []).join(", "));
          break;
        }
        if (fold(e.room) === fold(state.room)) setMembers(e.names || []);
        if (state.quietReplies.members > 0) state.quietReplies.members -= 1;
        else notice(activeBuffer(), e.room + ": " + (e.names || []).join(", "));
        break;
      }
      case "rooms": {
        state.rooms = Array.isArray(e.rooms) ? e.rooms : [];
        renderLists();
        if (state.quietReplies.rooms > 0) state.quietReplies.rooms -= 1;
        else {
          const text = state.rooms.map((r) => r.room + " (" + r.members + ")").join(", ");
          notice(activeBuffer(), "rooms: " + (text || "none"));
        }
        break;
      }
      case "users":
        notice(activeBuffer(), "online: " + (e.names || []).join(", "));
        break;
      case "info":
        notice(state.connected ? activeBuffer() : serverBuffer(), String(e.text));
        break;
      case "error":
        onError(e);
        break;
      default:
        break; // an event this client does not know yet
    }
  }

  function onError(e) {
    const code = Number(e.code);
    const text = String(e.message);
    if (!state.connected) {
      // A refusal at the handshake.
      if (code === 101 && state.everConnected && state.attempt < 4) {
        // Our old connection may not be gone yet: try again shortly.
        notice(activeBuffer(), "Name still in use, retrying...", "error");
        return;
      }
      if (code === 109 && state.everConnected) return; // full: the backoff retries
      state.leaving = !state.everConnected || [100, 104, 106, 107, 114, 117].includes(code);
      state.everConnected = state.everConnected && !state.leaving;
      backToJoin(text);
      return;
    }
    if (code === 102 || code === 100) {
      const sent = state.pendingPrivate.shift();
      if (sent) {
        notice(buffer(queryKey(sent.to), sent.to, "query"), text, "error");
        return;
      }
    }
    notice(activeBuffer(), text, "error");
  }

  // -- what the user types --------------------------------------------------------------
  function submit(text) {
    if (!text.trim()) return;
    state.inputHistory.push(text);
    if (state.inputHistory.length > 100) state.inputHistory.shift();
    state.historyPos = -1;
    const b = activeBuffer();
    const command = text.startsWith("/") && !text.startsWith("//")
      ? fold(text.split(" ", 1)[0]) : "";
    const rest = text.slice(command.length + 1);
    if (command === "/query" || command === "/q") {
      const name = rest.trim().split(/\s+/)[0];
      if (name) openQuery(name);
      return;
    }
    if (command === "/close") {
      if (b.kind === "query") {
        b.node.remove();
        state.buffers.delete(b.key);
        show(roomKey(state.room));
      }
      return;
    }
    if (command === "/quit" || ["exit", ":quit"].includes(fold(text.trim()))) {
      state.leaving = true;
    }
    if (!command && b.kind === "query") {
      // A private conversation: plain text goes to that person (or group).
      if (send("/msg " + b.label + " " + text)) {
        if (!b.label.startsWith("#")) state.pendingPrivate.push({ to: b.label, text });
      }
      return;
    }
    if (command === "/msg") {
      const [targets, ...words] = rest.split(" ");
      if (targets && words.length && !targets.includes(",") && !targets.startsWith("#")) {
        state.pendingPrivate.push({ to: targets, text: words.join(" ") });
      }
    }
    if (command === "/who") state.quietReplies.members = 0;
    if (command === "/rooms") state.quietReplies.rooms = 0;
    if (!send(text)) notice(b, "Not connected: your message was not sent.", "error");
  }

  function complete(input, backwards) {
    const value = input.value;
    let c = state.completion;
    if (!c || c.value !== value || c.caret !== input.selectionStart) {
      const caret = input.selectionStart;
      const start = value.lastIndexOf(" ", caret - 1) + 1;
      const word = value.slice(start, caret);
      let candidates;
      if (start === 0 && word.startsWith("/")) candidates = COMMANDS;
      else {
        const names = new Set(state.members);
        for (const b of state.buffers.values()) if (b.kind === "query") names.add(b.label);
        names.delete(state.name);
        candidates = [...names];
      }
      const bare = word.replace(/^@/, "");
      const matches = candidates
        .filter((x) => fold(x).startsWith(fold(word.startsWith("/") ? word : bare)))
        .sort((a, b) => fold(a).localeCompare(fold(b)));
      if (!matches.length) return;
      c = { start, end: caret, matches, index: -1, at: word.startsWith("@") };
    }
    c.index = (c.index + (backwards ? -1 : 1) + c.matches.length) % c.matches.length;
    let insert = (c.at ? "@" : "") + c.matches[c.index];
    if (c.start === 0 && !insert.startsWith("/")) insert += c.at ? ": " : ": ";
    else insert += " ";
    const head = value.slice(0, c.start);
    const tail = value.slice(c.end).replace(/^ /, "");
    input.value = head + insert + tail;
    const caret = head.length + insert.length;
    input.setSelectionRange(caret, caret);
    c.end = caret;
    c.value = input.value;
    c.caret = caret;
    state.completion = c;
  }

  function onKey(event) {
    const input = event.target;
    if (event.key === "Tab" && !event.ctrlKey && !event.altKey) {
      if (!input.value) return; // let Tab move the focus
      event.preventDefault();
      complete(input, event.shiftKey);
      return;
    }
    state.completion = null;
    const hist = state.inputHistory;
    if (event.key === "ArrowUp" && hist.length) {
      if (state.historyPos === -1) {
        if (input.value && input.selectionStart !== 0) return;
        state.draft = input.value;
        state.historyPos = hist.length;
      }
      if (state.historyPos > 0) state.historyPos -= 1;
      input.value = hist[state.historyPos];
      event.preventDefault();
    } else if (event.key === "ArrowDown" && state.historyPos !== -1) {
      state.historyPos += 1;
      if (state.historyPos >= hist.length) {
        state.historyPos = -1;
        input.value = state.draft;
      } else {
        input.value = hist[state.historyPos];
      }
      event.preventDefault();
    } else if (event.key === "PageUp" || event.key === "PageDown") {
      const log = $("log");
      log.scrollBy(0, (event.key === "PageUp" ? -0.9 : 0.9) * log.clientHeight);
      event.preventDefault();
    }
  }

  // -- wiring -----------------------------------------------------------------------
  function start() {
    $("join-name").value = localStorage.getItem("machat.name") || "";
    $("join-room").value = localStorage.getItem("machat.room") || "lounge";
    const params = new URLSearchParams(location.search);
    if (params.get("name")) $("join-name").value = params.get("name");
    if (params.get("room")) $("join-room").value = params.get("room");
    $("join-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.name = $("join-name").value.trim();
      state.room = $("join-room").value.trim() || "lounge";
      state.password = $("join-password").value;
      state.auth = $("join-auth").value;
      state.leaving = false;
      state.everConnected = false;
      state.attempt = 0;
      $("join-error").textContent = "";
      $("join-error").hidden = true;
      $("join-button").disabled = true;
      connect();
    });
    $("input-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("input");
      const text = input.value;
      input.value = "";
      submit(text);
    });
    $("input").addEventListener("keydown", onKey);
    $("room-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const room = $("room-input").value.trim();
      $("room-input").value = "";
      if (room) switchRoom(room);
    });
    $("reconnect-now").addEventListener("click", () => connect());
    $("jump").addEventListener("click", scrollToBottom);
    $("log").addEventListener("scroll", () => {
      if (isAtBottom()) $("jump").hidden = true;
    });
    const notifyButton = $("notify");
    notifyButton.setAttribute("aria-pressed", String(state.notify));
    notifyButton.addEventListener("click", async () => {
      if (!state.notify && "Notification" in window && Notification.permission !== "granted") {
        const permission = await Notification.requestPermission();
        if (permission !== "granted") {
          notice(activeBuffer(), "Notifications are blocked by the browser.", "error");
          return;
        }
      }
      state.notify = !state.notify;
      localStorage.setItem("machat.notify", state.notify ? "1" : "0");
      notifyButton.setAttribute("aria-pressed", String(state.notify));
    });
    for (const [button, cls] of [["toggle-sidebar", "show-sidebar"], ["toggle-members", "show-members"]]) {
      $(button).addEventListener("click", () => {
        const app = $("app");
        const open = !app.classList.contains(cls);
        closeDrawers();
        app.classList.toggle(cls, open);
        $(button).setAttribute("aria-expanded", String(open));
      });
    }
    document.addEventListener("visibilitychange", () => setAway(document.hidden));
    window.addEventListener("focus", () => setAway(false));
    window.addEventListener("blur", () => setAway(true));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeDrawers();
    });
    if (params.get("autojoin") && $("join-name").value) {
      $("join-form").requestSubmit();
    } else {
      $("join-name").focus();
    }
  }

  // For tests and the curious: the client's state, read-only by convention.
  window.machat = { state };
  start();
})();
