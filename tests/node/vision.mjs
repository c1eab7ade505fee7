// The `ollama` npm client sending images: node vision.mjs http://127.0.0.1:PORT model image.png
// Prints one JSON object with the replies to the image as bytes, as base64 and as a path, and in chat.
import { readFileSync } from 'node:fs'
import { Ollama } from 'ollama'

const [host, model, path] = process.argv.slice(2)
const ollama = new Ollama({ host })
const options = { temperature: 0, num_predict: 8, seed: 1 }
const bytes = new Uint8Array(readFileSync(path))
const out = {}
out.bytes = await ollama.generate({ model, prompt: 'What is in', images: [bytes], options })
out.base64 = (await ollama.generate({ model, prompt: 'What is in', images: [Buffer.from(bytes).toString('base64')], options })).response
out.path = (await ollama.generate({ model, prompt: 'What is in', images: [path], options })).response
out.chat = (await ollama.chat({ model, messages: [{ role: 'user', content: 'What is in', images: [bytes] }], options })).message.content
out.bytes = out.bytes.response
console.log(JSON.stringify(out))
