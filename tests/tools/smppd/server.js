#!/usr/bin/env node
// A small SMPP 3.4 SMSC for the tests and the benchmark of services/notification/providers/smpp.py.
//
//   node server.js --port 2775 --system-id hospital --password secret --log /tmp/submits.jsonl
//                  [--host 127.0.0.1] [--receipt-delay-ms 50] [--throttle-first N]
//                  [--refuse-destination 13800000000] [--receipt-text-only 1]
//
// It accepts bind_transceiver with the given system_id and password only (others get
// ESME_RINVPASWD / ESME_RINVSYSID and are closed), answers every submit_sm with a fresh message_id,
// appends each accepted submit_sm to --log as one JSON line (written before the answer, so a line
// exists for everything the client was told was accepted), and, when registered_delivery asks for
// it, sends a deliver_sm delivery receipt after --receipt-delay-ms. It reassembles nothing: the
// short_message is logged raw (hex) with its esm_class, and the test reads the UDH itself.
// --throttle-first N answers the first N submit_sm with ESME_RTHROTTLED; --refuse-destination
// answers ESME_RINVDSTADR for that number; --receipt-text-only 1 leaves the receipted_message_id
// and message_state TLVs out of the receipts (as SMPP 3.3-era SMSCs do). SIGTERM and SIGINT stop it.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const smpp = require('smpp');

// Keep the submitted bytes as they came: no decoding by data_coding, no UDH parsing.
smpp.commands.submit_sm.params.short_message = { type: smpp.types.buffer };

function parseArgs(argv) {
  const options = {
    host: '127.0.0.1',
    port: Number(process.env.SMPPD_PORT || 2775),
    systemId: process.env.SMPPD_SYSTEM_ID || 'test',
    password: process.env.SMPPD_PASSWORD || 'secret',
    log: process.env.SMPPD_LOG || 'submits.jsonl',
    receiptDelayMs: 50,
    throttleFirst: 0,
    refuseDestination: null,
    receiptTextOnly: false,
  };
  const names = {
    '--host': ['host', String],
    '--port': ['port', Number],
    '--system-id': ['systemId', String],
    '--password': ['password', String],
    '--log': ['log', String],
    '--receipt-delay-ms': ['receiptDelayMs', Number],
    '--throttle-first': ['throttleFirst', Number],
    '--refuse-destination': ['refuseDestination', String],
    '--receipt-text-only': ['receiptTextOnly', (value) => value === '1' || value === 'true'],
  };
  for (let i = 0; i < argv.length; i += 2) {
    const known = names[argv[i]];
    if (!known || argv[i + 1] === undefined) {
      process.stderr.write(`unknown or incomplete option: ${argv[i]}\n`);
      process.exit(2);
    }
    options[known[0]] = known[1](argv[i + 1]);
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
// Message ids are unique across restarts on the same port, as a real SMSC's are.
const idPrefix = crypto.randomBytes(4).toString('hex');
let submitted = 0;
let throttled = 0;

function smppDate(date) {
  // YYMMDDhhmm in China Standard Time (UTC+8), as the receipt text of mainland SMSCs carries it.
  const cst = new Date(date.getTime() + 8 * 3600 * 1000);
  const two = (n) => String(n).padStart(2, '0');
  return two(cst.getUTCFullYear() % 100) + two(cst.getUTCMonth() + 1) + two(cst.getUTCDate()) +
    two(cst.getUTCHours()) + two(cst.getUTCMinutes());
}

function sendReceipt(session, submit, messageId, submittedAt) {
  const text = `id:${messageId} sub:001 dlvr:001 submit date:${smppDate(submittedAt)} ` +
    `done date:${smppDate(new Date())} stat:DELIVRD err:000 text:`;
  const tlvs = options.receiptTextOnly ? {} : { receipted_message_id: messageId, message_state: 2 };
  session.deliver_sm({
    source_addr_ton: submit.dest_addr_ton,
    source_addr_npi: submit.dest_addr_npi,
    source_addr: submit.destination_addr,
    dest_addr_ton: submit.source_addr_ton,
    dest_addr_npi: submit.source_addr_npi,
    destination_addr: submit.source_addr,
    esm_class: 0x04,
    data_coding: 0,
    short_message: Buffer.from(text, 'ascii'),
    ...tlvs,
  });
}

function onSubmit(session, pdu) {
  if (throttled < options.throttleFirst) {
    throttled += 1;
    session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    return;
  }
  if (options.refuseDestination !== null && pdu.destination_addr === options.refuseDestination) {
    session.send(pdu.response({ command_status: smpp.ESME_RINVDSTADR }));
    return;
  }
  submitted += 1;
  const messageId = `${idPrefix}${submitted.toString(16).padStart(6, '0')}`;
  const record = {
    message_id: messageId,
    source: pdu.source_addr,
    source_ton: pdu.source_addr_ton,
    source_npi: pdu.source_addr_npi,
    destination: pdu.destination_addr,
    dest_ton: pdu.dest_addr_ton,
    dest_npi: pdu.dest_addr_npi,
    data_coding: pdu.data_coding,
    esm_class: pdu.esm_class,
    registered_delivery: pdu.registered_delivery,
    short_message: Buffer.from(pdu.short_message || []).toString('hex'),
    sequence: pdu.sequence_number,
    port: options.port,
    pid: process.pid,
  };
  fs.appendFileSync(options.log, JSON.stringify(record) + '\n');
  session.send(pdu.response({ message_id: messageId }));
  if (pdu.registered_delivery & 0x03) {
    const submittedAt = new Date();
    setTimeout(() => {
      if (!session.closed) sendReceipt(session, pdu, messageId, submittedAt);
    }, options.receiptDelayMs);
  }
}

function onBind(session, pdu) {
  if (session.bound) {
    session.send(pdu.response({ command_status: smpp.ESME_RALYBND }));
    return;
  }
  const systemId = String(pdu.system_id);
  const password = String(pdu.password);
  if (systemId !== options.systemId || password !== options.password) {
    const status = systemId !== options.systemId ? smpp.ESME_RINVSYSID : smpp.ESME_RINVPASWD;
    process.stdout.write(`bind refused: 0x${status.toString(16).padStart(2, '0')}\n`);
    session.send(pdu.response({ command_status: status }), () => session.close());
    return;
  }
  session.bound = true;
  session.send(pdu.response({ system_id: 'smppd' }));
}

const server = smpp.createServer((session) => {
  session.bound = false;
  session.closed = false;
  session.on('close', () => { session.closed = true; });
  // A client that vanishes (ECONNRESET) must not take the server down.
  session.on('error', () => { session.closed = true; });
  session.on('bind_transceiver', (pdu) => onBind(session, pdu));
  for (const refused of ['bind_transmitter', 'bind_receiver']) {
    session.on(refused, (pdu) => {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }), () => session.close());
    });
  }
  session.on('submit_sm', (pdu) => {
    if (!session.bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    onSubmit(session, pdu);
  });
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.bound = false;
    session.send(pdu.response(), () => session.close());
  });
  session.on('unknown', (pdu) => session.send(pdu.response()));
});

server.on('error', (error) => {
  process.stderr.write(`smppd: ${error.message}\n`);
  process.exit(1);
});

server.listen(options.port, options.host, () => {
  process.stdout.write(`smppd listening on ${options.host}:${options.port} pid ${process.pid}\n`);
});

function stop() {
  process.stdout.write(`smppd stopped after ${submitted} accepted submits\n`);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
