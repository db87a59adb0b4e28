/**
 * The connection event records of native ingress (src/ingress.ts `connectionEvent`): the
 * client address words (crates/binding `peer_words`) as text, IPv6 as RFC 5952 writes it.
 */
import { describe, expect, it } from 'vitest';
import { connectionEvent } from '../src/ingress';

const v6 = (port: number, ...groups: number[]): number[] => {
  const w = [port | (6 << 16)];
  for (let i = 0; i < 8; i += 2) w.push(((groups[i]! << 16) | groups[i + 1]!) >>> 0);
  return w;
};
const addressOf = (peer: number[]): [string | null, number] => {
  const { info } = connectionEvent(1, 1, 2, 3, peer);
  return [info.remoteAddress, info.remotePort];
};

describe('connection events', () => {
  it('IPv4 dotted, with its port', () => {
    expect(addressOf([443 | (4 << 16), 0xcb007107, 0, 0, 0])).toEqual(['203.0.113.7', 443]);
    expect(addressOf([65535 | (4 << 16), 0x7f000001, 0, 0, 0])).toEqual(['127.0.0.1', 65535]);
  });

  it('IPv6: lower case, leading zeros dropped, the longest run of two or more zero groups as ::, the first of equal runs', () => {
    expect(addressOf(v6(1, 0, 0, 0, 0, 0, 0, 0, 1))).toEqual(['::1', 1]);
    expect(addressOf(v6(2, 0, 0, 0, 0, 0, 0, 0, 0))).toEqual(['::', 2]);
    expect(addressOf(v6(3, 0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))).toEqual(['2001:db8::1', 3]);
    expect(addressOf(v6(4, 0x2001, 0xdb8, 0, 1, 1, 1, 1, 1))).toEqual(['2001:db8:0:1:1:1:1:1', 4]);
    expect(addressOf(v6(5, 0xfe80, 0, 0, 0, 1, 0, 0, 1))).toEqual(['fe80::1:0:0:1', 5]);
    expect(addressOf(v6(6, 0x2001, 0, 0, 1, 0, 0, 0xabcd, 0xffff))).toEqual(['2001::1:0:0:abcd:ffff', 6]);
    expect(addressOf(v6(7, 0x2001, 0xdb8, 0, 0, 1, 0, 0, 0))).toEqual(['2001:db8:0:0:1::', 7]);
  });

  it('an unknown address is null, port 0; the rest of the event is unchanged', () => {
    expect(addressOf([0, 0, 0, 0, 0])).toEqual([null, 0]);
    const { opened, info } = connectionEvent(1 | (1 << 8), 4, 5, 6, [80 | (4 << 16), 0x0a000001, 0, 0, 0]);
    expect(opened).toBe(true);
    expect(info).toMatchObject({ connectionId: 6, room: 4, player: 5, transport: 'tcp', remoteAddress: '10.0.0.1', remotePort: 80 });
  });
});
