// Installed by scripts/interop-setup over node_modules/webrtc-polyfill/index.js.
// The interop tests run webtorrent with WebRTC off, and the real module loads
// node-datachannel's native binary, which only its install script downloads
// (we install with --ignore-scripts). @thaunknown/simple-peer imports these
// three names, so they must exist; they are never called.
export const RTCPeerConnection = undefined
export const RTCSessionDescription = undefined
export const RTCIceCandidate = undefined
export default {}
