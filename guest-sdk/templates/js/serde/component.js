// The component's entry (built by `npm run build`, never imported by the tests): binds the
// plugin to the agent's host interface and exports the world's functions.
import * as host from "sluice:plugin/host@0.1.0";
import plugin from "./plugin.js";

export const { init, decode, encode } = plugin.bind(host);
