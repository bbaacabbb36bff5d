#!/usr/bin/env node
// webtorrent: the webtorrent 3.0.21 library (npm) as a test peer for btfs-mount.
//
// Runs one WebTorrent client in this Node process with DHT, trackers, LSD,
// UPnP/NAT-PMP, web seeds and WebRTC off (uTP and ut_pex only on request),
// adds one download or one seed, and reports JSON events on stdout, the
// same contract as the Python drivers (see common.py: ready, torrent,
// seeding, progress, finished, error, exit); also `wire` (addr, type) and
// `wire_closed` for each peer connection. Set DEBUG=webtorrent*,bittorrent-protocol
// for the library's own debug log on stderr.
//
// The library is loaded from $BTFS_INTEROP_NODE/node_modules (default
// interop/node/ at the top of the repository), installed offline-clean by
// scripts/interop-setup.
//
//   webtorrent.mjs --fetch MAGNET --save DIR [--peer HOST:PORT]...
//   webtorrent.mjs --seed PATH
//   options: --port N (TCP listen port, 0: any), --secure 0|1|2 (MSE/PE:
//   0 off, 1 = webtorrent's default: dial with MSE, accept both, 2 = RC4
//   only), --utp, --pex
//
// --peer addresses are given with torrent.addPeer() as soon as the info-hash
// is known, and again every 2 s while no peer is connected (webtorrent drops
// an address after a few failed retries); with --utp every 60 s only, so as
// not to restart webtorrent's uTP retries before its fallback to TCP.
//
// Stops on SIGTERM, SIGINT, or when stdin (a pipe) closes.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const nodeRoot = process.env.BTFS_INTEROP_NODE ?? path.join(here, '..', '..', 'interop', 'node')
const start = process.hrtime.bigint()

function emit (event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

function log (msg) {
  const t = Number(process.hrtime.bigint() - start) / 1e9
  process.stderr.write(`webtorrent.mjs[${process.pid}] ${t.toFixed(3).padStart(7)} ${msg}\n`)
}

function parseArgs (argv) {
  const a = { peers: [], port: 0, secure: 1, utp: false, pex: false }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`)
      return argv[++i]
    }
    if (k === '--fetch') a.fetch = v()
    else if (k === '--seed') a.seed = v()
    else if (k === '--save') a.save = v()
    else if (k === '--peer') a.peers.push(v())
    else if (k === '--port') a.port = Number(v())
    else if (k === '--secure') a.secure = Number(v())
    else if (k === '--utp') a.utp = true
    else if (k === '--pex') a.pex = true
    else throw new Error(`unknown argument ${k}`)
  }
  if (!a.fetch === !a.seed) throw new Error('give exactly one of --fetch MAGNET, --seed PATH')
  if (a.fetch && !a.save) throw new Error('--fetch needs --save DIR')
  if (![0, 1, 2].includes(a.secure)) throw new Error('--secure is 0, 1 or 2')
  return a
}

let client = null
let stopping = false

function stop (reason, code = 0) {
  if (stopping) return
  stopping = true
  log(`stopping: ${reason}`)
  emit('exit', { reason })
  const done = () => process.exit(code)
  setTimeout(done, 2000).unref()
  if (client) client.destroy(done)
  else done()
}

async function main () {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (e) {
    emit('error', { message: e.message })
    process.exit(2)
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  let st = null
  try { st = fs.fstatSync(0) } catch {}
  if (st && (st.isFIFO() || st.isSocket())) {
    process.stdin.on('data', () => {})
    process.stdin.on('end', () => stop('stdin closed'))
    process.stdin.on('error', () => stop('stdin closed'))
  }

  const entry = path.join(nodeRoot, 'node_modules', 'webtorrent', 'index.js')
  if (!fs.existsSync(entry)) {
    emit('error', { message: `webtorrent is not installed at ${entry}: run scripts/interop-setup` })
    process.exit(2)
  }
  const WebTorrent = (await import(pathToFileURL(entry).href)).default

  client = new WebTorrent({
    dht: false,
    lsd: false,
    tracker: false,
    natUpnp: false,
    natPmp: false,
    webSeeds: false,
    utp: args.utp,
    utPex: args.pex,
    torrentPort: args.port,
    secure: args.secure
  })
  client.on('error', e => emit('error', { message: `client: ${e.message ?? e}` }))
  await new Promise(resolve => client.listening ? resolve() : client.once('listening', resolve))
  const addr = client.address()
  emit('ready', { client: 'webtorrent', version: WebTorrent.VERSION, port: addr.port, rpc_port: null, pid: process.pid })

  const added = process.hrtime.bigint()
  const seconds = () => Math.round(Number(process.hrtime.bigint() - added) / 1e6) / 1e3
  const opts = { announce: [], private: false }
  let torrent
  if (args.seed) {
    const src = path.resolve(args.seed)
    torrent = client.seed(src, { ...opts, path: path.dirname(src) })
  } else {
    fs.mkdirSync(args.save, { recursive: true })
    torrent = client.add(args.fetch, { ...opts, path: path.resolve(args.save) })
  }
  torrent.on('warning', w => log(`warning: ${w.message ?? w}`))
  torrent.on('error', e => emit('error', { message: `torrent: ${e.message ?? e}` }))
  torrent.on('wire', (wire, a) => {
    emit('wire', { addr: a ?? wire.remoteAddress, type: wire.type, encrypted: wire._encryptionMethod ?? null })
    wire.once('close', () => emit('wire_closed', { addr: a ?? wire.remoteAddress }))
  })
  const addPeers = () => {
    if (!torrent.infoHash || torrent.destroyed) return
    for (const p of args.peers) {
      const ok = torrent.addPeer(p)
      log(`addPeer ${p}: ${ok}`)
    }
  }
  torrent.once('infoHash', addPeers)
  // With uTP on, webtorrent dials uTP, retries it (RECONNECT_WAIT) and only
  // then falls back to TCP; adding the address again would restart that.
  const retry = setInterval(() => {
    if (torrent.numPeers === 0) addPeers()
  }, args.utp ? 60000 : 2000)
  retry.unref()

  torrent.once('metadata', () => {
    emit('torrent', { info_hash: torrent.infoHash, magnet: `magnet:?xt=urn:btih:${torrent.infoHash}`, name: torrent.name, total_size: torrent.length })
  })
  let finished = false
  const onDone = () => {
    if (finished) return
    finished = true
    if (args.seed) emit('seeding', { info_hash: torrent.infoHash })
    else emit('finished', { info_hash: torrent.infoHash, seconds: seconds() })
  }
  torrent.on('done', onDone)
  torrent.on('ready', () => { if (torrent.done) onDone() })

  let last = ''
  let lastAt = 0
  setInterval(() => {
    if (!torrent.infoHash) return
    const f = {
      info_hash: torrent.infoHash,
      state: torrent.done ? 'seed' : (torrent.ready ? 'download' : 'metadata'),
      done: torrent.downloaded,
      total: torrent.length ?? 0,
      peers: torrent.numPeers,
      download_rate: Math.round(torrent.downloadSpeed),
      upload_rate: Math.round(torrent.uploadSpeed),
      uploaded: torrent.uploaded
    }
    const key = JSON.stringify([f.state, f.done, f.peers, f.uploaded])
    const now = Date.now()
    if (key !== last || now - lastAt > 5000) {
      last = key
      lastAt = now
      emit('progress', f)
    }
  }, 1000).unref()
  // Keep the event loop alive until a stop.
  setInterval(() => {}, 1 << 30)
}

main().catch(e => {
  emit('error', { message: `${e.stack ?? e}` })
  process.exit(1)
})
