// The real `ollama` npm client against a running daemon: node smoke.mjs http://127.0.0.1:PORT model
// Prints one JSON object with what each call returned; any exception exits non-zero.
import { Ollama } from 'ollama'

const [host, model] = process.argv.slice(2)
const ollama = new Ollama({ host })
const out = {}
out.version = (await ollama.version()).version
out.list = (await ollama.list()).models.map((m) => m.name)
out.show = (await ollama.show({ model })).capabilities
const opts = { temperature: 0, num_predict: 8, seed: 1 }
out.chat = (await ollama.chat({ model, messages: [{ role: 'user', content: 'Say hi' }], options: opts })).message
let streamed = ''
let last = null
for await (const part of await ollama.chat({ model, messages: [{ role: 'user', content: 'Say hi' }], options: opts, stream: true })) {
  streamed += part.message.content
  last = part
}
out.chatStream = { text: streamed, done: last.done, done_reason: last.done_reason }
out.generate = (await ollama.generate({ model, prompt: 'The sky is', options: opts })).response
const schema = { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] } }, required: ['color'] }
out.format = JSON.parse((await ollama.chat({ model, messages: [{ role: 'user', content: 'Pick a color as JSON.' }], format: schema, options: { ...opts, num_predict: 30 } })).message.content)
const statuses = []
for await (const p of await ollama.create({ model: 'node-copy', from: model, system: 'be brief', stream: true })) statuses.push(p.status)
out.create = statuses
await ollama.copy({ source: 'node-copy', destination: 'node-copy2' })
await ollama.delete({ model: 'node-copy' })
await ollama.delete({ model: 'node-copy2' })
out.after = (await ollama.list()).models.map((m) => m.name)
console.log(JSON.stringify(out))
